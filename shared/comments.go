package shared

// MetaComment is the Result.Metadata key under which a plugin gives a
// standard comment on an unknown verdict: why it could not judge the
// artifact (one of the Comment* values). The host passes it on to the
// marketplace in the answer's comments.
const MetaComment = "comment"

// The standard comments on an unknown verdict, as PolySwarm's ScanMetadata
// names them. The host adds the first two itself; a plugin gives the
// others (or the first, for a type it turns away).
const (
	CommentTypeUnsupported     = "SKIPPED:TYPE-UNSUPPORTED"
	CommentCannotFetch         = "SKIPPED:CANNOT-FETCH"
	CommentEncrypted           = "SKIPPED:ENCRYPTED"
	CommentDecompressionUnsafe = "SKIPPED:DECOMPRESSION-UNSAFE"
	// CommentSignaturesStale: the backend's signatures are too old to
	// vouch for a benign answer, or a new set is being loaded. Not one of
	// PolySwarm's four, so the host keeps it in the plugin's part of the
	// bounty record and leaves it out of the answer's comments.
	CommentSignaturesStale = "SKIPPED:SIGNATURES-STALE"
)

// MetaMatches is the Result.Metadata key under which a plugin lists what
// matched (signatures, rules) as a JSON array of objects, each with at
// least a "rule" string. The host passes it on, per backend, in the
// answer's metadata.
const MetaMatches = "matches"
