// Package buildinfo holds the version stamped into the binary at link time.
package buildinfo

import (
	"fmt"
	"runtime"
)

// Version is set with -ldflags "-X github.com/quicproquo/qpq/node/buildinfo.Version=V".
var Version = "0.1.0-dev"

// String is the one-line description `qpq version` prints and hello sends.
func String() string {
	return fmt.Sprintf("qpq %s (%s %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
