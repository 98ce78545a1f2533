//go:build !unix

package home

// locked runs f; without flock, concurrent changes are not serialised.
func (h Home) locked(name string, f func() error) error { return f() }
