package discovery

import "golang.org/x/sys/unix"

// reusePort lets several responders (avahi, umdns, another qpq) bind
// port 5353 on one host.
func reusePort(fd uintptr) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}
