package shared

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
)

// fdConn is one connection to a plugin's descriptor socket, with the
// buffer its answers are read into.
type fdConn struct {
	conn *net.UnixConn
	buf  []byte
}

// scanDescriptor passes a.File to the plugin by reference. It returns
// errNoDescriptors (before anything reached the plugin) when the artifact
// must be streamed instead.
func (c *GRPCClient) scanDescriptor(ctx context.Context, a Artifact) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fromStatus("scan", status.FromContextError(err).Err())
	}
	fd, own, err := descriptorOf(a)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", errNoDescriptors, err)
	}
	if own {
		// The file's own descriptor stays open while it is in use here.
		defer runtime.KeepAlive(a.File)
	} else {
		defer unix.Close(fd)
	}
	size := a.Size
	if size < 0 {
		size = -1
	}
	header := &proto.ScanHeader{ArtifactId: a.ID, Type: artifactTypeToProto(a.Type), Size: size, Metadata: a.Metadata, Sha256: a.SHA256}
	if d, ok := ctx.Deadline(); ok {
		header.DeadlineUnixNano = d.UnixNano()
	}
	var resp *proto.ScanResponse
	if !c.fds.noBatches.Load() {
		resp, err = c.fds.scanBatched(ctx, header, fd)
	}
	if c.fds.noBatches.Load() && (resp == nil && (err == nil || errors.Is(err, errNoBatches))) {
		header.RequestId = 0
		msg, merr := gproto.Marshal(header)
		if merr != nil || len(msg) > maxDescriptorMessage {
			return Result{}, fmt.Errorf("%w: header of %d bytes", errNoDescriptors, len(msg))
		}
		resp, err = c.fds.scan(ctx, msg, fd)
	}
	if err != nil {
		return Result{}, err
	}
	if resp.ErrorCode != 0 {
		return Result{}, fromStatus("scan", status.Error(codes.Code(resp.ErrorCode), resp.ErrorMessage))
	}
	return resultFromProto(resp), nil
}

// descriptorOf returns the descriptor to pass for a.File. With
// a.FileExclusive, a.File's own descriptor when it is read-only (own: the
// caller's, not to be closed); otherwise, or when it is not, a new
// read-only descriptor of the file (reopenReadOnly). Either way a regular
// file holding a.Size bytes.
func descriptorOf(a Artifact) (fd int, own bool, err error) {
	if !a.FileExclusive {
		fd, err = reopenReadOnly(a.File, a.Size)
		return fd, false, err
	}
	rc, err := a.File.SyscallConn()
	if err != nil {
		return -1, false, err
	}
	readOnly := false
	var checkErr error
	err = rc.Control(func(sysfd uintptr) {
		fd = int(sysfd)
		flags, ferr := unix.FcntlInt(sysfd, unix.F_GETFL, 0)
		// O_PATH reads as O_RDONLY, but such a descriptor cannot be read:
		// it is reopened, as a writable one is.
		readOnly = ferr == nil && flags&unix.O_ACCMODE == unix.O_RDONLY && flags&unix.O_PATH == 0
		if readOnly {
			var st unix.Stat_t
			if checkErr = unix.Fstat(fd, &st); checkErr == nil {
				checkErr = checkRegular(&st, a.Size)
			}
		}
	})
	switch {
	case err != nil:
		return -1, false, err
	case !readOnly:
		fd, err = reopenReadOnly(a.File, a.Size)
		return fd, false, err
	case checkErr != nil:
		return -1, false, fmt.Errorf("pass the file: %w", checkErr)
	}
	return fd, true, nil
}

// checkRegular checks that st is a regular file of size bytes (any size
// when size is -1).
func checkRegular(st *unix.Stat_t, size int64) error {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("not a regular file")
	}
	if size >= 0 && st.Size != size {
		return fmt.Errorf("the file holds %d bytes, the artifact %d", st.Size, size)
	}
	return nil
}

// reopenReadOnly opens a new read-only descriptor of f's file (through
// /proc/self/fd, which also reaches an unlinked file such as the
// marketplace's spool). The plugin gets its own open file description: it
// cannot write, and its offset is not the host's. f must be a regular file
// holding size bytes (any size when size is -1).
func reopenReadOnly(f *os.File, size int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var openErr error
	err = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if openErr = unix.Fstat(int(fd), &st); openErr != nil {
			return
		}
		if openErr = checkRegular(&st, size); openErr != nil {
			return
		}
		nfd, openErr = unix.Open("/proc/self/fd/"+strconv.Itoa(int(fd)), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if openErr != nil {
			return
		}
		// The same file, not whatever the link resolved to meanwhile.
		var got unix.Stat_t
		if openErr = unix.Fstat(nfd, &got); openErr == nil && (got.Dev != st.Dev || got.Ino != st.Ino) {
			openErr = fmt.Errorf("reopened a different file")
		}
		if openErr != nil {
			unix.Close(nfd)
			nfd = -1
		}
	})
	if err != nil {
		return -1, err
	}
	if openErr != nil {
		return -1, fmt.Errorf("reopen read-only: %w", openErr)
	}
	return nfd, nil
}

func (p *descriptorPool) get(ctx context.Context) (*fdConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", p.path)
	if err != nil {
		return nil, err
	}
	return &fdConn{conn: conn.(*net.UnixConn), buf: make([]byte, maxDescriptorMessage)}, nil
}

func (p *descriptorPool) put(c *fdConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) < maxIdleDescriptorConns {
		p.idle = append(p.idle, c)
		return
	}
	c.conn.Close()
}

// scan sends one header with fd attached and waits for the answer, or for
// ctx: a cancelled scan closes its connection, which is how the plugin
// learns of it.
func (p *descriptorPool) scan(ctx context.Context, msg []byte, fd int) (*proto.ScanResponse, error) {
	c, err := p.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
		}
		if isNoSocket(err) {
			// Declared but not there: stream, now and from now on.
			p.failed.Store(true)
		}
		return nil, fmt.Errorf("%w: %v", errNoDescriptors, err)
	}
	// A past deadline wakes a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	resp, err := func() (*proto.ScanResponse, error) {
		if _, _, err := c.conn.WriteMsgUnix(msg, unix.UnixRights(fd), nil); err != nil {
			return nil, err
		}
		n, _, flags, _, err := c.conn.ReadMsgUnix(c.buf, nil)
		switch {
		case err != nil:
			return nil, err
		case n == 0:
			return nil, fmt.Errorf("the plugin closed the connection")
		case flags&unix.MSG_TRUNC != 0:
			return nil, fmt.Errorf("answer longer than %d bytes", len(c.buf))
		}
		resp := &proto.ScanResponse{}
		if err := gproto.Unmarshal(c.buf[:n], resp); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		return resp, nil
	}()
	if !stop() {
		c.conn.Close()
		return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
	}
	if err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("scan by reference: %w: %v", ErrPluginUnavailable, err)
	}
	p.put(c)
	return resp, nil
}
