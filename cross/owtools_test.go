package cross

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The tests in opkg_test.go and procd_test.go run OpenWrt's own tools, built from
// ../shared/openwrt-tools by `make owtools` into $QPQ_OWTOOLS (the Makefile sets it;
// relative paths are taken from the repository root), on the .ipk files `make ipk`
// writes to build/ipk.

const (
	repoRoot = ".."
	ipkDir   = "../build/ipk"
	binDir   = "../build/bin"
)

// missing skips the test with why, or fails it under CI=true, where a missing tool or
// build output is a failure.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: a missing tool is a failure)", msg)
	}
	t.Skipf("%s: skipping", msg)
}

// owTools returns the absolute directory of the built OpenWrt tools (bin/, lib/, owroot/).
func owTools(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("QPQ_OWTOOLS")
	if dir == "" {
		missing(t, "QPQ_OWTOOLS is not set (make owtools builds OpenWrt's tools and the Makefile sets it)")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot, dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, ".built")); err != nil {
		missing(t, "OpenWrt tools not built in %s (run make owtools)", abs)
	}
	return abs
}

// ipkName is NAME_VERSION_ARCH.ipk.
var ipkName = regexp.MustCompile(`^qpq_([^_]+)_(.+)\.ipk$`)

// builtIPKs returns the arch -> path of every qpq .ipk in build/ipk, one version only.
func builtIPKs(t *testing.T) (version string, byArch map[string]string) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(ipkDir, "qpq_*.ipk"))
	if len(paths) == 0 {
		missing(t, "no .ipk in %s (run make ipk)", ipkDir)
	}
	byArch = map[string]string{}
	for _, p := range paths {
		m := ipkName.FindStringSubmatch(filepath.Base(p))
		if m == nil {
			continue
		}
		if version != "" && m[1] != version {
			t.Fatalf("%s holds versions %s and %s: run make clean ipk", ipkDir, version, m[1])
		}
		version = m[1]
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		byArch[m[2]] = abs
	}
	return version, byArch
}

// hostQPQ returns the cross-built qpq for this machine's architecture, or one built
// once for all tests of this run.
func hostQPQ(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(binDir, "qpq_linux_"+runtime.GOARCH))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	hostBuild.once.Do(func() {
		hostBuild.path = filepath.Join(scratch, "qpq")
		cmd := exec.Command("go", "build", "-o", hostBuild.path, "../node/cmd/qpq")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			hostBuild.err = fmt.Errorf("go build qpq: %w\n%s", err, out)
		}
	})
	if hostBuild.err != nil {
		t.Fatal(hostBuild.err)
	}
	return hostBuild.path
}

var hostBuild struct {
	once sync.Once
	path string
	err  error
}

// scratch is a directory for what the tests of one run share, removed when they end.
var scratch string

func TestMain(m *testing.M) {
	var err error
	scratch, err = os.MkdirTemp("", "qpq-cross-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(scratch)
	os.Exit(code)
}

// copyFile copies src (following symlinks) to dst with mode, creating dst's directory.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
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

// copyTree copies the regular files and directories under src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		copyFile(t, p, to, fi.Mode().Perm())
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// writeFile writes data to root/path, creating directories.
func writeFile(t *testing.T, root, path, data string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// sharedLibs returns the libraries ldd names for the binaries (the loader included),
// as absolute host paths.
func sharedLibs(t *testing.T, bins ...string) []string {
	t.Helper()
	ldd := needTool(t, "ldd")
	var libs []string
	re := regexp.MustCompile(`(?m)(?:=>\s*)?(/\S+)\s+\(0x`)
	for _, b := range bins {
		out, err := exec.Command(ldd, b).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "not a dynamic executable") {
				continue
			}
			t.Fatalf("ldd %s: %v\n%s", b, err, out)
		}
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			if !slices.Contains(libs, m[1]) {
				libs = append(libs, m[1])
			}
		}
	}
	return libs
}
