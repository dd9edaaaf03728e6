package shared

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Artifacts by reference.
//
// Plugins run on the host's machine, so an artifact that is a file need not
// cross the boundary as bytes: the host passes a new read-only descriptor
// of it (SCM_RIGHTS) to a plugin that declares Info.ByReference, and the
// plugin, or its backend (clamd's FILDES), reads the file itself. Bytes
// streamed over gRPC crossed three times (host → plugin → clamd, which
// spooled them to a temp file before scanning), and each small artifact
// paid a gRPC call.
//
// The descriptor socket is DescriptorSocketName in the plugin's private
// socket directory (0700, beside go-plugin's gRPC socket), a SOCK_SEQPACKET
// socket the plugin listens on. One message per scan each way, one scan at
// a time per connection:
//
//	host → plugin: a ScanHeader (no inline content) with exactly one
//	               descriptor attached; its size, when not -1, is the
//	               file's size, and sha256 is set when the host knows it.
//	plugin → host: a ScanResponse (error_code/error_message for a failed
//	               scan, as on ScanSession).
//
// A host cancels a scan by closing the connection: the plugin sees the
// close and cancels the scan's context. Each message is at most
// maxDescriptorMessage bytes; a header that does not fit goes over gRPC.
//
// The batch socket, BatchSocketName beside it, carries many scans on one
// connection, so thousands of small artifacts do not each cost a message
// and a wakeup both ways (a CLI scan of 4,000 × 4 KiB files spent ~8
// context switches a file in host and plugin with one scan per message):
//
//	host → plugin: a ScanBatch: headers, each with a request_id, and one
//	               descriptor attached per header, in order; and the ids
//	               of scans the host gave up on (their contexts are
//	               cancelled).
//	plugin → host: a ScanBatchResponse: the answers that are ready, each
//	               with its request_id. Every request is answered once.
//
// The host sends whatever scans are queued in one message; the plugin
// scans each as it arrives and answers whatever is done in one message.
// A host that finds no batch socket (an older plugin) uses the descriptor
// socket; a plugin whose host never dials it serves the descriptor socket
// as before. Closing the connection cancels every scan under way on it.
//
// The rules: the host sends a read-only descriptor whose offset is the
// plugin's alone, never a path: one opened afresh, or the host's own when
// it opened the file read-only for that scan and that plugin alone and
// reads it only by offset (Artifact.FileExclusive; never a writable one);
// the plugin owns the descriptor it got and closes it once the scan is
// answered, on every path (cancel, bad message, crash closes it with the
// process).

// DescriptorSocketName is the socket, in a plugin's private socket
// directory, on which it takes artifacts by reference.
const DescriptorSocketName = "descriptors.sock"

// BatchSocketName is the socket, beside DescriptorSocketName, on which a
// plugin takes several artifacts by reference per message.
const BatchSocketName = "batches.sock"

// maxBatch bounds the scans of one batch message: SCM_RIGHTS carries at
// most 253 descriptors (the kernel's SCM_MAX_FD) in one message.
const maxBatch = 128

// maxBatchInFlight bounds the scans under way on one batch connection in
// the plugin; past it a request is answered ResourceExhausted.
const maxBatchInFlight = 4096

// Holding back. Answers arrive one by one, as the backend finishes each
// scan, and the host refills one by one: batches stay of one artifact (as
// measured, 3,900 messages for 4,000 files with 128 in flight) unless a
// side holds back while the pipeline is deep. The plugin holds answers
// while more than batchBusy scans of the connection are under way, until
// batchHold are ready or batchHoldFor has passed; the host holds requests
// while batchBusy*2 are unanswered, until an answer comes or batchHoldFor
// has passed. Below those depths (a marketplace at its usual
// concurrency) nothing is held.
const (
	batchBusy    = 16
	batchHold    = 16
	batchHoldFor = 2 * time.Millisecond
)

// maxFieldOverhead is what a repeated message field adds to its message's
// own size in the encoding: a tag and a length.
const maxFieldOverhead = 1 + 10

// maxDescriptorMessage bounds one message on the descriptor socket: a
// header with its metadata, or an answer. A unix datagram of this size
// fits in the default socket buffers.
const maxDescriptorMessage = 64 << 10

// errNoDescriptors means an artifact cannot go by reference (no socket,
// not a regular file, a header too large...): it is streamed instead,
// which is always possible since Content reads the same bytes.
var errNoDescriptors = errors.New("artifact cannot go by reference")

// descriptorPool keeps connections to a plugin's descriptor socket.
type descriptorPool struct {
	// path is the socket; set by Dispense, "" when the plugin has no
	// private socket directory.
	path string
	// declared: the plugin's Info said ByReference.
	declared atomic.Bool
	// failed: the socket could not be reached, so artifacts are streamed
	// for the rest of this plugin process's life.
	failed atomic.Bool
	mu     sync.Mutex
	idle   []*fdConn
	// noBatches: the plugin has no batch socket.
	noBatches atomic.Bool
	batchMu   sync.Mutex
	batchConn *batchConn
}

func (p *descriptorPool) declare(v bool) {
	if p != nil {
		p.declared.Store(v)
	}
}

func (p *descriptorPool) usable() bool {
	return p != nil && p.path != "" && p.declared.Load() && !p.failed.Load()
}

// maxIdleDescriptorConns bounds the open, unused connections kept per
// plugin, as maxIdleSessions does for streams.
const maxIdleDescriptorConns = 32

// isNoSocket reports a dial error that means nobody listens there.
func isNoSocket(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}
