// Package proto is the wire contract between the host and its scanner
// plugins: scanner.proto (package microengine.scanner.v1, plugin protocol
// version 1) and the code protoc generates from it, committed. `make proto`
// regenerates it; nothing outside package shared uses it directly.
package proto
