//go:build !linux

package discovery

// reusePort does nothing off Linux: qpq nodes run on Linux, and elsewhere
// port 5353 is shared only if the platform allows it by default.
func reusePort(uintptr) error { return nil }
