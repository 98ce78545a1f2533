package cross

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The router binaries do not link libp2p: the bridge is a separate build
// (node/bridge, its own module), and its packages must never reach the
// router's flash. Each build/bin binary's module list, as `go version -m`
// reads it from the binary, names no libp2p or multiformats module and
// the same quic-go as go.mod; nor do they hold the daemon's bridge links,
// which only the bridge tag builds.
func TestRouterBinariesDoNotLinkLibp2p(t *testing.T) {
	bins, _ := filepath.Glob(filepath.Join(binDir, "qpq_linux_*"))
	if len(bins) == 0 {
		missing(t, "no build/bin binaries (run make cross)")
	}
	gomod, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/quic-go/quic-go").Output()
	if err != nil {
		t.Fatal(err)
	}
	quic := strings.TrimSpace(string(gomod))
	for _, b := range bins {
		out, err := exec.Command("go", "version", "-m", b).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v %s", b, err, out)
		}
		mods := string(out)
		for _, banned := range []string{"libp2p", "multiformats", "go-multiaddr"} {
			if strings.Contains(mods, banned) {
				t.Errorf("%s links %s:\n%s", filepath.Base(b), banned, mods)
			}
		}
		// The daemon's bridge links (node/daemon/bridge.go, bridge tag).
		if raw, err := os.ReadFile(b); err != nil || bytes.Contains(raw, []byte("bridges of one island link over the mesh")) {
			t.Errorf("%s holds the daemon's bridge links (read: %v)", filepath.Base(b), err)
		}
		if !strings.Contains(mods, "github.com/quic-go/quic-go\t"+quic) {
			t.Errorf("%s does not link quic-go %s as go.mod says:\n%s", filepath.Base(b), quic, mods)
		}
	}
}
