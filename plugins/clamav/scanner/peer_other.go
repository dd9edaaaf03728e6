//go:build !linux

package scanner

func peerPid(string) (int, error) { return 0, errNoPeer }
