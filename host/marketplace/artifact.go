package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// fetchArtifact brings a bounty's content into the spool, from wherever
// its artifact_uri says: a data: URI holds it, an http(s) URL is
// downloaded. A url bounty's content is fetched the same way: it is the
// URL to judge (text/uri-list), not the artifact_uri itself.
func (f *fetcher) fetchArtifact(ctx context.Context, sp *spool, uri, wantSHA256 string) (int64, error) {
	if !isDataURI(uri) {
		// Only http(s) is downloaded; a bounty with any other link was
		// accepted all the same, to be answered unknown.
		if err := checkHTTPURL(uri); err != nil {
			return 0, fmt.Errorf("artifact_uri: %w (or a data: URI)", err)
		}
		return f.fetch(ctx, sp, uri, wantSHA256)
	}
	data, err := decodeDataURI(uri, f.maxSize)
	if err != nil {
		return 0, err
	}
	if wantSHA256 != "" {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != wantSHA256 {
			return 0, fmt.Errorf("sha256 mismatch: the bounty says %s, the data: URI holds %s", wantSHA256, hex.EncodeToString(sum[:]))
		}
	}
	sp.reset()
	file, err := sp.file()
	if err != nil {
		return 0, err
	}
	if _, err := file.WriteAt(data, 0); err != nil {
		return 0, fmt.Errorf("spool the data: URI's content: %w", err)
	}
	return int64(len(data)), nil
}
