package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
	"github.com/microengine/microengine/shared/rawio"
)

// descriptorServer is the plugin's side of the descriptor socket.
type descriptorServer struct {
	impl Scanner
	log  hclog.Logger
	uid  int
}

// listenDescriptors starts taking artifacts by reference in the private
// socket directory the host gave (go-plugin's PLUGIN_UNIX_SOCKET_DIR). It
// returns false when there is none (an older host: it never connects).
func listenDescriptors(impl Scanner, logger hclog.Logger) (bool, error) {
	dir := os.Getenv(plugin.EnvUnixSocketDir)
	if dir == "" {
		return false, nil
	}
	if _, err := serveDescriptors(filepath.Join(dir, DescriptorSocketName), impl, logger); err != nil {
		return false, err
	}
	// Without the batch socket the host uses the descriptor socket alone.
	if _, err := serveBatches(filepath.Join(dir, BatchSocketName), impl, logger); err != nil {
		logger.Warn("artifacts by reference go one per message", "error", err)
	}
	return true, nil
}

// serveDescriptors listens on path and serves every connection until the
// listener is closed.
func serveDescriptors(path string, impl Scanner, logger hclog.Logger) (*net.UnixListener, error) {
	return serveUnixPacket(path, impl, logger, "artifacts by reference", "descriptor socket", (*descriptorServer).serveConn)
}

// serveUnixPacket listens on path (unixpacket) and hands every connection
// to serve on a goroutine of its own until the listener is closed. what
// names what comes on the socket in a listen error, socket the socket in
// an accept error.
func serveUnixPacket(path string, impl Scanner, logger hclog.Logger, what, socket string, serve func(*descriptorServer, *net.UnixConn)) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen for %s: %w", what, err)
	}
	s := &descriptorServer{impl: impl, log: logger, uid: os.Getuid()}
	go func() {
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					logger.Error(socket+" failed", "error", err)
				}
				return
			}
			go serve(s, conn)
		}
	}()
	return ln, nil
}

// fdRequest is one received header and the descriptor that came with it.
type fdRequest struct {
	header *proto.ScanHeader
	file   *os.File
	// bad is set for a message that is no valid request.
	bad error
}

// serveConn answers one connection's requests in turn. A reader goroutine
// takes the next message at once, so a close by the host (its cancel)
// cancels the scan in flight.
func (s *descriptorServer) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	if err := s.checkPeer(conn); err != nil {
		s.log.Warn("descriptor connection refused", "error", err)
		return
	}
	reqs := make(chan fdRequest)
	done := make(chan struct{})
	defer close(done)
	var mu sync.Mutex
	var cancelScan context.CancelFunc
	closed := false
	go func() {
		defer close(reqs)
		buf := make([]byte, maxDescriptorMessage)
		oob := make([]byte, unix.CmsgSpace(4*4))
		for {
			req, err := readFDRequest(conn, buf, oob)
			if err != nil {
				mu.Lock()
				closed = true
				if cancelScan != nil {
					cancelScan()
				}
				mu.Unlock()
				return
			}
			select {
			case reqs <- req:
			case <-done:
				if req.file != nil {
					req.file.Close()
				}
				return
			}
		}
	}()
	for req := range reqs {
		resp := s.answer(req, func(cancel context.CancelFunc) bool {
			mu.Lock()
			defer mu.Unlock()
			cancelScan = cancel
			return !closed
		})
		mu.Lock()
		cancelScan = nil
		mu.Unlock()
		out, err := gproto.Marshal(resp)
		if err == nil && len(out) > maxDescriptorMessage {
			out, err = gproto.Marshal(&proto.ScanResponse{ErrorCode: int32(codes.ResourceExhausted),
				ErrorMessage: fmt.Sprintf("answer of %d bytes is over the %d-byte limit", len(out), maxDescriptorMessage)})
		}
		if err != nil {
			return
		}
		if _, err := conn.Write(out); err != nil {
			return
		}
		if req.bad != nil {
			return
		}
	}
}

// checkPeer refuses a connection from another user. The socket directory
// is the host's user's alone; this keeps the rule should it ever not be.
func (s *descriptorServer) checkPeer(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials: %w", credErr)
	}
	if int(cred.Uid) != s.uid {
		return fmt.Errorf("peer uid %d is not ours (%d)", cred.Uid, s.uid)
	}
	return nil
}

// readFDRequest reads one message. Every descriptor that arrives is either
// handed on in the request or closed here.
func readFDRequest(conn *net.UnixConn, buf, oob []byte) (fdRequest, error) {
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	var fds []int
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if got, perr := unix.ParseUnixRights(&m); perr == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	closeAll := func(fds []int) {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if err != nil || n == 0 {
		closeAll(fds)
		if err == nil {
			err = io.EOF
		}
		return fdRequest{}, err
	}
	bad := func(format string, args ...any) (fdRequest, error) {
		closeAll(fds)
		return fdRequest{bad: fmt.Errorf(format, args...)}, nil
	}
	switch {
	case flags&unix.MSG_TRUNC != 0:
		return bad("request longer than %d bytes", len(buf))
	case flags&unix.MSG_CTRUNC != 0:
		return bad("too many descriptors with one request")
	case len(fds) != 1:
		return bad("a request carries exactly one descriptor, not %d", len(fds))
	}
	h := &proto.ScanHeader{}
	if err := gproto.Unmarshal(buf[:n], h); err != nil {
		return bad("decode request: %v", err)
	}
	return fdRequest{header: h, file: os.NewFile(uintptr(fds[0]), "artifact")}, nil
}

// answer scans one request and closes its descriptor. begin registers the
// scan's cancel with the connection and reports whether it is still open.
func (s *descriptorServer) answer(req fdRequest, begin func(context.CancelFunc) bool) *proto.ScanResponse {
	if req.bad != nil {
		return &proto.ScanResponse{ErrorCode: int32(codes.InvalidArgument), ErrorMessage: req.bad.Error()}
	}
	defer req.file.Close()
	ctx, cancel := scanContext(req.header)
	defer cancel()
	if !begin(cancel) {
		cancel()
	}
	return s.scanFile(ctx, req.header, req.file)
}

// scanContext is the context of a scan by reference: cancellable, with
// the host's deadline when it sent one.
func scanContext(h *proto.ScanHeader) (context.Context, context.CancelFunc) {
	if h.DeadlineUnixNano > 0 {
		return context.WithDeadline(context.Background(), time.Unix(0, h.DeadlineUnixNano))
	}
	return context.WithCancel(context.Background())
}

// scanFile scans the file a header came with and maps the outcome to an
// answer. The caller closes the file.
func (s *descriptorServer) scanFile(ctx context.Context, h *proto.ScanHeader, file *os.File) *proto.ScanResponse {
	var st unix.Stat_t
	// rawio: this fstat and the one after the scan cannot block, and
	// a system call through package syscall wakes the runtime's sysmon
	// once the plugin sat idle.
	if err := rawio.Fstat(file, &st); err != nil {
		return &proto.ScanResponse{ErrorCode: int32(codes.InvalidArgument), ErrorMessage: fmt.Sprintf("stat descriptor: %v", err)}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &proto.ScanResponse{ErrorCode: int32(codes.InvalidArgument), ErrorMessage: "the descriptor is not a regular file"}
	}
	if h.Size >= 0 && st.Size != h.Size {
		return resultToProto(Unknown("the file holds %d bytes, the header announced %d", st.Size, h.Size))
	}
	size := st.Size
	content := &fileContent{r: io.NewSectionReader(file, 0, size)}
	res, err := s.impl.Scan(ctx, Artifact{
		ID: h.ArtifactId, Type: artifactTypeFromProto(h.Type), Size: size, Metadata: h.Metadata,
		SHA256: h.Sha256, File: file, Content: content,
	})
	if err != nil {
		st := status.Convert(toStatus(err))
		return &proto.ScanResponse{ErrorCode: int32(st.Code()), ErrorMessage: st.Message()}
	}
	return resultToProto(guardFileResult(res, file, size, content.err))
}

// fileContent is an artifact's Content read from its descriptor. It keeps
// the first read error, so a scanner that went on past one (or stopped
// there and answered benign) cannot pass the failure off as benign: the
// stream's guardResult checks its chunkReader the same way.
type fileContent struct {
	r   *io.SectionReader
	err error
}

func (c *fileContent) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.keep(err)
	return n, err
}

// ReadAt and Seek keep what io.SectionReader offers: a scanner may rewind
// the content (clamav does, to retry on another clamd) rather than buffer it.
func (c *fileContent) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.keep(err)
	return n, err
}

func (c *fileContent) Seek(offset int64, whence int) (int64, error) {
	return c.r.Seek(offset, whence)
}

func (c *fileContent) keep(err error) {
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
}

// guardFileResult is guardResult for an artifact by reference: the scanner
// (or its backend) read the file itself, so a benign answer stands only if
// Content was read without error and the file still holds the bytes it was
// asked about.
func guardFileResult(r Result, f *os.File, size int64, readErr error) Result {
	if r = checkVerdict(r); r.Verdict != VerdictBenign {
		return r
	}
	if readErr != nil {
		return Unknown("read the artifact: %v", readErr)
	}
	var st unix.Stat_t
	if err := rawio.Fstat(f, &st); err != nil {
		return Unknown("stat the artifact after the scan: %v", err)
	}
	if st.Size != size {
		return Unknown("the file changed size during the scan (%d bytes, then %d)", size, st.Size)
	}
	return r
}
