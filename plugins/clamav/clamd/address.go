// Package clamd is a client for the clamd daemon's socket protocol: INSTREAM
// scans, PING, VERSION, STATS and RELOAD, over a unix socket or TCP.
//
// Every call takes a context first. The context's deadline becomes the
// connection's deadline, and cancelling it closes the connection, so a
// cancelled scan returns at once even while blocked in a write to a clamd
// that has stopped reading. Commands use the NUL-framed "z" form, one
// command per connection, except small INSTREAMs, which ride kept IDSESSION
// connections (see session.go).
package clamd

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Address is where clamd listens: a unix socket path or a TCP host:port.
type Address struct {
	// Network is "unix" or "tcp".
	Network string
	// Addr is the socket path for unix, host:port for tcp.
	Addr string
}

// ParseAddress reads "unix:///run/clamav/clamd.ctl" or "tcp://host:port".
// A bare absolute path is taken as a unix socket, since that is how clamd's
// own LocalSocket option is written.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Address{}, fmt.Errorf("clamd address is empty (want unix:///path/to/clamd.sock or tcp://host:port)")
	}
	if strings.HasPrefix(s, "/") {
		return Address{Network: "unix", Addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("clamd address %q: %w", s, err)
	}
	switch u.Scheme {
	case "unix":
		// unix:///path has an empty host; unix://relative/path would put
		// "relative" in the host, which is never what was meant.
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return Address{}, fmt.Errorf("clamd address %q: a unix socket needs an absolute path, as in unix:///run/clamav/clamd.ctl", s)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return Address{}, fmt.Errorf("clamd address %q: unexpected query or fragment", s)
		}
		return Address{Network: "unix", Addr: u.Path}, nil
	case "tcp":
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" {
			return Address{}, fmt.Errorf("clamd address %q: want tcp://host:port", s)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return Address{}, fmt.Errorf("clamd address %q: a tcp address has no path, query or fragment", s)
		}
		return Address{Network: "tcp", Addr: u.Host}, nil
	case "":
		return Address{}, fmt.Errorf("clamd address %q has no scheme (want unix:///path/to/clamd.sock or tcp://host:port)", s)
	}
	return Address{}, fmt.Errorf("clamd address %q: unsupported scheme %q (want unix or tcp)", s, u.Scheme)
}

// String gives the address back in the form ParseAddress reads.
func (a Address) String() string {
	if a.Network == "unix" {
		return "unix://" + a.Addr
	}
	return a.Network + "://" + a.Addr
}
