package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// nobody is the uid and gid the key-access check runs as when the test runs as root
// (root reads any file whatever its mode).
const nobody = 65534

// keyAccessEnv names the data dir the helper process loads.
const keyAccessEnv = "QPQ_TEST_KEYACCESS_DIR"

// TestKeyAccessHelper is not a test: run by TestUnreadableKeyRefusesStart as another
// user, it loads the identity in $QPQ_TEST_KEYACCESS_DIR and prints the outcome.
func TestKeyAccessHelper(t *testing.T) {
	dir := os.Getenv(keyAccessEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	fmt.Println(loadOutcome(dir))
}

// loadOutcome is LoadOrCreateNode's result as one line: "ok FINGERPRINT" or
// "error ACCESS|OTHER MESSAGE".
func loadOutcome(dir string) string {
	n, _, err := LoadOrCreateNode(dir)
	switch {
	case err == nil:
		return "ok " + n.Fingerprint().String()
	case errors.Is(err, ErrKeyFileAccess):
		return "error ACCESS " + err.Error()
	default:
		return "error OTHER " + err.Error()
	}
}

// TestUnreadableKeyRefusesStart: a 0.1 node's keys (root's, 0600) seen by a node that
// now runs as its own user. Loading must fail with ErrKeyFileAccess, name the file and
// the fix, and leave the dir as it was: no new identity beside the old one. Two
// layouts: the whole dir root's (as 0.1 left it), and the dir handed over but the key
// file not (a chown that was not recursive), where a new key could be written.
func TestUnreadableKeyRefusesStart(t *testing.T) {
	for _, c := range []struct {
		name      string
		dirToNode bool // the dir belongs to the node's user, the key files do not
	}{{"dir_and_keys_root", false}, {"keys_root", true}} {
		t.Run(c.name, func(t *testing.T) {
			base := worldTraversableDir(t)
			dir := filepath.Join(base, "qpq")
			old, _, err := LoadOrCreateNode(dir)
			if err != nil {
				t.Fatal(err)
			}
			keyPath := filepath.Join(dir, NodeKeyFile)
			before := dirSnapshot(t, dir)

			var out string
			if os.Geteuid() == 0 {
				if c.dirToNode {
					if err := os.Chown(dir, nobody, nobody); err != nil {
						t.Fatal(err)
					}
				}
				out = asNobody(t, base, dir)
			} else {
				// Not root: mode bits deny this user as they deny the service's.
				for _, f := range []string{NodeKeyFile, OnionKeyFile} {
					chmod(t, filepath.Join(dir, f), 0)
				}
				if !c.dirToNode {
					chmod(t, dir, 0o100) // searchable by its owner only, like a dir of another user's
				}
				out = loadOutcome(dir)
				chmod(t, dir, 0o700)
				for _, f := range []string{NodeKeyFile, OnionKeyFile} {
					chmod(t, filepath.Join(dir, f), 0o600)
				}
			}

			if !strings.HasPrefix(out, "error ACCESS ") {
				t.Fatalf("loading unreadable keys: %q, want ErrKeyFileAccess", out)
			}
			for _, want := range []string{keyPath, "permission denied", "not creating a new identity", "chown -R qpq:qpq " + dir} {
				if !strings.Contains(out, want) {
					t.Errorf("message %q lacks %q", out, want)
				}
			}
			if after := dirSnapshot(t, dir); !slices.Equal(after, before) {
				t.Errorf("the data dir changed:\n before %q\n after  %q", before, after)
			}
			// Once readable, the keys are still the node's identity.
			if err := os.Chown(dir, os.Geteuid(), os.Getegid()); err != nil {
				t.Fatal(err)
			}
			n, created, err := LoadOrCreateNode(dir)
			if err != nil || created || n.Fingerprint() != old.Fingerprint() {
				t.Errorf("after the fix: %v created=%v %v, want the old identity %s", n, created, err, old.Fingerprint())
			}
		})
	}
}

// worldTraversableDir is a temporary dir another user can reach (t.TempDir's parents are
// 0700), removed when the test ends.
func worldTraversableDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "qpq-keyaccess-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	chmod(t, base, 0o755)
	return base
}

// asNobody runs this test binary's TestKeyAccessHelper on dir as uid and gid nobody
// and returns the line it prints.
func asNobody(t *testing.T, base, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a 0700 build dir; nobody needs a copy it can run.
	bin := filepath.Join(base, "identity.test")
	copyExecutable(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^TestKeyAccessHelper$", "-test.count=1")
	cmd.Env = []string{keyAccessEnv + "=" + dir, "PATH=/usr/bin:/bin"}
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, b)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "error ") {
			return l
		}
	}
	t.Fatalf("helper printed no outcome:\n%s", b)
	return ""
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// dirSnapshot lists dir's entries with their contents (read as the test's own user).
func dirSnapshot(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Name()+"="+string(bytes.TrimSpace(b)))
	}
	return out
}
