package cross

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

// The .ipk files installed, upgraded and removed with OpenWrt's real opkg (opkg-lede) in
// an offline root, as a router (or an image build) does it. The root holds OpenWrt's
// shell library, so the package's postinst and prerm run default_postinst and
// default_prerm from /lib/functions.sh: with IPKG_INSTROOT set they enable and disable
// the init script (the /etc/rc.d links) instead of starting it.

// opkgRoot is an offline root for one architecture, like a router's: libc installed, the
// arch list in /etc/opkg.conf, OpenWrt's shell library.
type opkgRoot struct {
	tools, dir string
}

func newOpkgRoot(t *testing.T, tools, arch string) *opkgRoot {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, filepath.Join(tools, "owroot"), dir)
	for _, d := range []string{"etc/rc.d", "tmp", "var/lock", "usr/lib/opkg/info"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "usr/lib/opkg/status",
		"Package: libc\nVersion: 1.2.5-r4\nStatus: install user installed\nArchitecture: "+arch+"\nInstalled-Time: 1700000000\n\n", 0o644)
	writeFile(t, dir, "usr/lib/opkg/info/libc.control", "Package: libc\nVersion: 1.2.5-r4\nArchitecture: "+arch+"\n", 0o644)
	writeFile(t, dir, "usr/lib/opkg/info/libc.list", "/lib/libc.so\n", 0o644)
	writeFile(t, dir, "etc/opkg.conf", strings.Join([]string{
		"dest root /",
		"dest ram /tmp",
		"lists_dir ext /var/opkg-lists",
		"option overlay_root /overlay",
		"arch all 1",
		"arch noarch 1",
		"arch " + arch + " 10",
		"",
	}, "\n"), 0o644)
	// base-files' users, which default_postinst's user_add appends to.
	writeFile(t, dir, "etc/passwd", basePasswd, 0o644)
	writeFile(t, dir, "etc/group", baseGroup, 0o644)
	writeFile(t, dir, "etc/shadow", "root:::0:99999:7:::\n", 0o600)
	return &opkgRoot{tools: tools, dir: dir}
}

// run runs opkg-cl on the root with the maintainer scripts on (--force-postinstall) and
// IPKG_INSTROOT set, as OpenWrt's image build runs them, and returns its output.
func (r *opkgRoot) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--offline-root", r.dir, "-f", filepath.Join(r.dir, "etc/opkg.conf"), "--force-postinstall"}, args...)
	cmd := exec.Command(filepath.Join(r.tools, "bin", "opkg-cl"), full...)
	cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+r.dir, "TMPDIR="+filepath.Join(r.dir, "tmp"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustRun runs opkg and fails the test on an error status or on any error opkg collects
// other than its notice about a conffile kept.
func (r *opkgRoot) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.run(t, args...)
	if err != nil {
		t.Fatalf("opkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "* ") && !strings.Contains(l, "resolve_conffiles: Existing conffile") {
			t.Errorf("opkg %s reported: %s\n%s", strings.Join(args, " "), l, out)
		}
	}
	return out
}

func (r *opkgRoot) path(p string) string { return filepath.Join(r.dir, p) }

// status returns the fields of package name in usr/lib/opkg/status, nil when absent.
func (r *opkgRoot) status(t *testing.T, name string) map[string]string {
	t.Helper()
	for _, block := range strings.Split(readFile(t, r.path("usr/lib/opkg/status")), "\n\n") {
		fields := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(block))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
				fields[k] = v
			}
		}
		if fields["Package"] == name {
			return fields
		}
	}
	return nil
}

// checkInstalled asserts the package's files, the rc.d links default_postinst makes, and
// opkg's record of version v.
func (r *opkgRoot) checkInstalled(t *testing.T, arch, v string) {
	t.Helper()
	st := r.status(t, "qpq")
	if st == nil || st["Version"] != v || st["Status"] != "install user installed" || st["Architecture"] != arch {
		t.Errorf("opkg status of qpq: %v, want version %s, install user installed, %s", st, v, arch)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{ipk.QPQBinPath, ipk.QPQBinMode},
		{ipk.QPQInitPath, ipk.QPQInitMode},
		{ipk.QPQConfigPath, ipk.QPQConfigMode},
		{ipk.QPQKeepPath, ipk.QPQKeepMode},
	} {
		fi, err := os.Stat(r.path(f.path))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != f.mode || fi.Size() == 0 {
			t.Errorf("%s: mode %v size %d, want mode %v and content", f.path, fi.Mode().Perm(), fi.Size(), f.mode)
		}
	}
	if b := readFile(t, r.path(ipk.QPQBinPath)); !strings.HasPrefix(b, "\x7fELF") {
		t.Errorf("%s is not an ELF binary", ipk.QPQBinPath)
	}
	if got, want := readFile(t, r.path(ipk.QPQInitPath)), readFile(t, initScript); got != want {
		t.Errorf("installed init script differs from %s (stale build/ipk? run make ipk)", initScript)
	}
	if got, want := readFile(t, r.path(ipk.QPQKeepPath)), readFile(t, keepFile); got != want {
		t.Errorf("installed keep file %q, want %q", got, want)
	}
	// default_postinst ran the init script's enable (START=95, STOP=10) in the root.
	for _, l := range []string{"etc/rc.d/S95qpq", "etc/rc.d/K10qpq"} {
		if dst, err := os.Readlink(r.path(l)); err != nil || dst != "../init.d/qpq" {
			t.Errorf("%s -> %q (%v), want ../init.d/qpq: postinst did not enable the service", l, dst, err)
		}
	}
	// default_postinst created the service's user and group from Require-User, once.
	if got := strings.Count(readFile(t, r.path("etc/passwd")), "\nqpq:"); got != 1 || !strings.HasSuffix(readFile(t, r.path("etc/passwd")), qpqPasswd) {
		t.Errorf("/etc/passwd has %d qpq lines, want one %q:\n%s", got, qpqPasswd, readFile(t, r.path("etc/passwd")))
	}
	if got := strings.Count(readFile(t, r.path("etc/group")), "\nqpq:"); got != 1 || !strings.HasSuffix(readFile(t, r.path("etc/group")), qpqGroup) {
		t.Errorf("/etc/group has %d qpq lines, want one %q:\n%s", got, qpqGroup, readFile(t, r.path("etc/group")))
	}
	list := readFile(t, r.path("usr/lib/opkg/info/qpq.list"))
	for _, p := range []string{ipk.QPQBinPath, ipk.QPQInitPath, ipk.QPQConfigPath, ipk.QPQKeepPath} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p) + `(\t|$)`).MatchString(list) {
			t.Errorf("opkg's file list lacks %s:\n%s", p, list)
		}
	}
}

// newerVersion bumps the patch number of MAJOR.MINOR.PATCH[suffix].
func newerVersion(t *testing.T, v string) string {
	t.Helper()
	m := regexp.MustCompile(`^(\d+\.\d+\.)(\d+)(.*)$`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("version %q is not MAJOR.MINOR.PATCH[suffix]", v)
	}
	n, _ := strconv.Atoi(m[2])
	return m[1] + strconv.Itoa(n+1) + m[3]
}

// upgradeMarker is appended to the config of the newer package, so its conffile differs
// from the one installed.
const upgradeMarker = "\n# a newer package's config\n"

// buildNewer writes, with the repository's mkipk, the packages of version v for every
// arch from build/bin, with a changed config, once per test run; it returns arch -> path.
func buildNewer(t *testing.T, v string) map[string]string {
	t.Helper()
	newer.once.Do(func() { newer.byArch, newer.err = mkipkAll(v) })
	if newer.err != nil {
		t.Fatal(newer.err)
	}
	return newer.byArch
}

var newer struct {
	once   sync.Once
	byArch map[string]string
	err    error
}

func mkipkAll(v string) (map[string]string, error) {
	files := filepath.Join(scratch, "files-"+v)
	if err := os.CopyFS(files, os.DirFS(filepath.Join(repoRoot, "openwrt", "files"))); err != nil {
		return nil, fmt.Errorf("copy openwrt/files: %w", err)
	}
	cfg := filepath.Join(files, "qpq.config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg, append(b, upgradeMarker...), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(scratch, "ipk-"+v)
	bins, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "run", "./cross/cmd/mkipk", "-version", v, "-all", "-bindir", bins,
		"-files", files, "-targets", "cross/targets.txt", "-out", out, "-epoch", "0")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkipk -version %s: %w\n%s", v, err, b)
	}
	paths, _ := filepath.Glob(filepath.Join(out, "qpq_*.ipk"))
	byArch := map[string]string{}
	for _, p := range paths {
		if m := ipkName.FindStringSubmatch(filepath.Base(p)); m != nil {
			byArch[m[2]] = p
		}
	}
	return byArch, nil
}

// TestOpkgInstallUpgradeRemove takes the .ipk of every architecture through a router's
// life with the real opkg: install, edit /etc/config/qpq, upgrade (the edit kept, the
// new config beside it as qpq-opkg), remove (the package's files and links gone, the
// edited config left, as opkg leaves a modified conffile).
func TestOpkgInstallUpgradeRemove(t *testing.T) {
	tools := owTools(t)
	v1, old := builtIPKs(t)
	archs := make([]string, 0, len(old))
	for a := range old {
		archs = append(archs, a)
	}
	slices.Sort(archs)
	v2 := newerVersion(t, v1)
	newer := buildNewer(t, v2)
	newConfig := readFile(t, configFile) + upgradeMarker

	for _, arch := range archs {
		t.Run(arch, func(t *testing.T) {
			if newer[arch] == "" {
				t.Fatalf("mkipk wrote no %s package of %s", arch, v2)
			}
			r := newOpkgRoot(t, tools, arch)
			r.mustRun(t, "install", old[arch])
			r.checkInstalled(t, arch, v1)
			if got := readFile(t, r.path(ipk.QPQConfigPath)); got != readFile(t, configFile) {
				t.Errorf("installed config differs from %s (stale build/ipk? run make ipk)", configFile)
			}

			// A volunteer edits the config.
			shipped := readFile(t, r.path(ipk.QPQConfigPath))
			edited := strings.Replace(shipped, "option log_level 'info'", "option log_level 'debug'", 1)
			if edited == shipped {
				t.Fatal("shipped config has no option log_level 'info' to edit")
			}
			writeFile(t, r.dir, ipk.QPQConfigPath, edited, ipk.QPQConfigMode)

			out := r.mustRun(t, "install", newer[arch])
			r.checkInstalled(t, arch, v2)
			if got := readFile(t, r.path(ipk.QPQConfigPath)); got != edited {
				t.Errorf("upgrade did not keep the edited config; it holds:\n%s\nopkg said:\n%s", got, out)
			}
			if got := readFile(t, r.path(ipk.QPQConfigPath+"-opkg")); got != newConfig {
				t.Errorf("the new package's config is not beside it as %s-opkg; it holds:\n%s", ipk.QPQConfigPath, got)
			}

			t.Logf("upgrade: %s", out)
			out = r.mustRun(t, "remove", "qpq")
			t.Logf("remove: %s", out)
			if st := r.status(t, "qpq"); st != nil && st["Status"] != "deinstall user not-installed" {
				t.Errorf("after remove, opkg status of qpq: %v", st)
			}
			for _, p := range []string{ipk.QPQBinPath, ipk.QPQInitPath, ipk.QPQKeepPath, "etc/rc.d/S95qpq", "etc/rc.d/K10qpq",
				"usr/lib/opkg/info/qpq.list", "usr/lib/opkg/info/qpq.control", "usr/lib/opkg/info/qpq.prerm"} {
				if exists(r.path(p)) {
					t.Errorf("%s left after remove", p)
				}
			}
			// opkg leaves a modified conffile (and the -opkg copy it does not own).
			if !exists(r.path(ipk.QPQConfigPath)) || readFile(t, r.path(ipk.QPQConfigPath)) != edited {
				t.Errorf("remove did not leave the edited %s as opkg does; opkg said:\n%s", ipk.QPQConfigPath, out)
			}
			if st := r.status(t, "libc"); st == nil {
				t.Error("remove took libc's status entry with it")
			}
		})
	}
}

// TestOpkgUpgradeHandsKeysToQPQ: upgrading a router where a root-run 0.1 node left its
// identity (/etc/qpq and its keys root's, 0600) hands them to the qpq user, unchanged,
// so the node that now runs as qpq keeps its identity.
func TestOpkgUpgradeHandsKeysToQPQ(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "installing files owned by another user needs root")
	}
	tools := owTools(t)
	v1, old := builtIPKs(t)
	arch := "x86_64"
	if old[arch] == "" {
		t.Fatalf("no %s package in %s", arch, ipkDir)
	}
	newer := buildNewer(t, newerVersion(t, v1))
	r := newOpkgRoot(t, tools, arch)
	r.mustRun(t, "install", old[arch])
	// What 0.1 left: root's dir and keys.
	if err := os.MkdirAll(r.path("etc/qpq"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, r.dir, "etc/qpq/node.key", "old identity", 0o600)
	writeFile(t, r.dir, "etc/qpq/onion.key", "old onion key", 0o600)
	for _, p := range []string{"etc/qpq", "etc/qpq/node.key", "etc/qpq/onion.key"} {
		if err := os.Chown(r.path(p), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	r.mustRun(t, "install", newer[arch])
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)
	ownedBy(t, r.dir, "etc/qpq/node.key", 7443, 7443, 0o600)
	ownedBy(t, r.dir, "etc/qpq/onion.key", 7443, 7443, 0o600)
	if got := readFile(t, r.path("etc/qpq/node.key")); got != "old identity" {
		t.Errorf("node.key now holds %q", got)
	}
	if got := strings.Count(readFile(t, r.path("etc/passwd")), "\nqpq:"); got != 1 {
		t.Errorf("after upgrade /etc/passwd has %d qpq users, want 1", got)
	}
}

// TestOpkgUpgradeReplacesUneditedConfig: a config nobody edited follows the package.
func TestOpkgUpgradeReplacesUneditedConfig(t *testing.T) {
	tools := owTools(t)
	v1, old := builtIPKs(t)
	arch := "x86_64"
	if old[arch] == "" {
		t.Fatalf("no %s package in %s", arch, ipkDir)
	}
	v2 := newerVersion(t, v1)
	newer := buildNewer(t, v2)
	r := newOpkgRoot(t, tools, arch)
	r.mustRun(t, "install", old[arch])
	if runtime.GOARCH == "amd64" {
		// The installed binary runs here and says the package's version.
		out, err := exec.Command(r.path(ipk.QPQBinPath), "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), v1) {
			t.Errorf("installed qpq version: %v %q, want %s", err, out, v1)
		}
	}
	r.mustRun(t, "install", newer[arch])
	r.checkInstalled(t, arch, v2)
	if got := readFile(t, r.path(ipk.QPQConfigPath)); got != readFile(t, configFile)+upgradeMarker {
		t.Errorf("an unedited config was not replaced by the new package's:\n%s", got)
	}
	if exists(r.path(ipk.QPQConfigPath + "-opkg")) {
		t.Errorf("%s-opkg written although the config was not edited", ipk.QPQConfigPath)
	}
	r.mustRun(t, "remove", "qpq")
	if exists(r.path(ipk.QPQConfigPath)) {
		t.Errorf("remove left the unedited %s", ipk.QPQConfigPath)
	}
}

// TestOpkgRefusesWrongArch: a router's opkg will not install another architecture's package.
func TestOpkgRefusesWrongArch(t *testing.T) {
	tools := owTools(t)
	_, byArch := builtIPKs(t)
	for _, c := range []struct{ router, pkg string }{
		{"x86_64", "mips_24kc"},
		{"mipsel_24kc", "mips_24kc"},
		{"arm_cortex-a9_vfpv3-d16", "aarch64_cortex-a53"},
	} {
		t.Run(c.pkg+"_on_"+c.router, func(t *testing.T) {
			if byArch[c.pkg] == "" {
				t.Fatalf("no %s package in %s", c.pkg, ipkDir)
			}
			r := newOpkgRoot(t, tools, c.router)
			out, err := r.run(t, "install", byArch[c.pkg])
			if err == nil {
				t.Errorf("opkg installed a %s package on %s:\n%s", c.pkg, c.router, out)
			}
			if !strings.Contains(out, "incompatible with the architectures configured") {
				t.Errorf("opkg's refusal does not name the architecture mismatch:\n%s", out)
			}
			if exists(r.path(ipk.QPQBinPath)) || r.status(t, "qpq") != nil {
				t.Errorf("a refused package left files or a status entry:\n%s", out)
			}
		})
	}
}
