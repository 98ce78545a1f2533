package cross

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

// The .apk files (OpenWrt 25.12's apk v3) installed, upgraded and deleted with the real
// apk-tools in an offline root, as OpenWrt's image build runs it: --force-no-chroot and
// --preserve-env with IPKG_INSTROOT set, so the package's scripts run default_postinst and
// default_prerm from the root's /lib/functions.sh, which enable and disable the init script
// (the /etc/rc.d links) instead of starting it.

const apkDir = "../build/apk"

// apkName is NAME-VERSION.apk, in build/apk/ARCH/.
var apkName = regexp.MustCompile(`^qpq-(.+)\.apk$`)

// builtAPKs returns the arch -> path of every qpq .apk in build/apk, one version only.
func builtAPKs(t *testing.T) (version string, byArch map[string]string) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(apkDir, "*", "qpq-*.apk"))
	if len(paths) == 0 {
		missing(t, "no .apk in %s (run make apk)", apkDir)
	}
	byArch = map[string]string{}
	for _, p := range paths {
		m := apkName.FindStringSubmatch(filepath.Base(p))
		if m == nil {
			continue
		}
		if version != "" && m[1] != version {
			t.Fatalf("%s holds versions %s and %s: run make clean apk", apkDir, version, m[1])
		}
		version = m[1]
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		byArch[filepath.Base(filepath.Dir(p))] = abs
	}
	return version, byArch
}

// apkRoot is an offline root for one architecture, like a 25.12 router's: the arch in
// /etc/apk/arch, a libc package installed, OpenWrt's shell library.
type apkRoot struct {
	apk, dir string
}

func newApkRoot(t *testing.T, tools, arch string) *apkRoot {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, filepath.Join(tools, "owroot"), dir)
	for _, d := range []string{"etc/rc.d", "tmp", "var/lock"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "etc/apk/arch", arch+"\n", 0o644)
	// base-files' users, which add_group_and_user appends to.
	writeFile(t, dir, "etc/passwd", basePasswd, 0o644)
	writeFile(t, dir, "etc/group", baseGroup, 0o644)
	writeFile(t, dir, "etc/shadow", "root:::0:99999:7:::\n", 0o600)
	r := &apkRoot{apk: filepath.Join(tools, "bin", "apk"), dir: dir}
	// qpq depends on libc, which every router has: an empty stand-in of the root's arch.
	libc := filepath.Join(t.TempDir(), "libc.apk")
	if out, err := exec.Command(r.apk, "mkpkg", "--info", "name:libc", "--info", "version:1.2.5-r4",
		"--info", "arch:"+arch, "--output", libc).CombinedOutput(); err != nil {
		t.Fatalf("apk mkpkg libc: %v\n%s", err, out)
	}
	r.mustRun(t, "--initdb", "add", libc)
	return r
}

// run runs apk on the root, offline, untrusted packages allowed, and returns its output.
func (r *apkRoot) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--root", r.dir, "--allow-untrusted", "--no-network", "--no-cache",
		"--force-no-chroot", "--preserve-env"}, args...)
	cmd := exec.Command(r.apk, full...)
	cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+r.dir, "TMPDIR="+filepath.Join(r.dir, "tmp"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustRun runs apk and fails the test on an error status or on anything a script printed
// as an error (apk prefixes script output with "* ").
func (r *apkRoot) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.run(t, args...)
	if err != nil {
		t.Fatalf("apk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "* ") || strings.Contains(l, "ERROR") || strings.Contains(l, "WARNING") {
			t.Errorf("apk %s reported: %s\n%s", strings.Join(args, " "), l, out)
		}
	}
	return out
}

func (r *apkRoot) path(p string) string { return filepath.Join(r.dir, p) }

// installed returns the fields of package name in apk's database, nil when absent.
func (r *apkRoot) installed(t *testing.T, name string) map[string]string {
	t.Helper()
	for _, block := range strings.Split(readFile(t, r.path("lib/apk/db/installed")), "\n\n") {
		fields := map[string]string{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && len(k) == 1 {
				if _, seen := fields[k]; !seen {
					fields[k] = v
				}
			}
		}
		if fields["P"] == name {
			return fields
		}
	}
	return nil
}

// checkInstalled asserts the package's files, the rc.d links default_postinst makes, and
// apk's record of version v.
func (r *apkRoot) checkInstalled(t *testing.T, arch, v string) {
	t.Helper()
	db := r.installed(t, "qpq")
	if db == nil || db["V"] != v || db["A"] != arch || db["L"] != ipk.QPQLicense || db["D"] != "libc" {
		t.Errorf("apk's record of qpq: %v, want version %s, arch %s, license %s, depends libc", db, v, arch, ipk.QPQLicense)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{ipk.QPQBinPath, ipk.QPQBinMode},
		{ipk.QPQInitPath, ipk.QPQInitMode},
		{ipk.QPQConfigPath, ipk.QPQConfigMode},
		{ipk.QPQKeepPath, ipk.QPQKeepMode},
		{"/lib/apk/packages/qpq.list", 0o644},
		{"/lib/apk/packages/qpq.conffiles", 0o644},
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
		t.Errorf("installed init script differs from %s (stale build/apk? run make apk)", initScript)
	}
	if got, want := readFile(t, r.path(ipk.QPQKeepPath)), readFile(t, keepFile); got != want {
		t.Errorf("installed keep file %q, want %q", got, want)
	}
	if got := readFile(t, r.path("/lib/apk/packages/qpq.conffiles")); got != ipk.QPQConfigPath+"\n" {
		t.Errorf("qpq.conffiles holds %q, want %s", got, ipk.QPQConfigPath)
	}
	list := readFile(t, r.path("/lib/apk/packages/qpq.list"))
	for _, p := range []string{ipk.QPQBinPath, ipk.QPQInitPath, ipk.QPQConfigPath, ipk.QPQKeepPath} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p) + `$`).MatchString(list) {
			t.Errorf("qpq.list lacks %s:\n%s", p, list)
		}
	}
	// The package's users (qpq.rusers) exist once, as on an .ipk install.
	if got := readFile(t, r.path("/lib/apk/packages/qpq.rusers")); got != ipk.QPQRequireUser+"\n" {
		t.Errorf("qpq.rusers holds %q, want %q", got, ipk.QPQRequireUser)
	}
	if pw := readFile(t, r.path("etc/passwd")); strings.Count(pw, "\nqpq:") != 1 || !strings.Contains(pw, qpqPasswd) {
		t.Errorf("/etc/passwd lacks exactly one %q:\n%s", qpqPasswd, pw)
	}
	if gr := readFile(t, r.path("etc/group")); !strings.Contains(gr, qpqGroup) {
		t.Errorf("/etc/group lacks %q:\n%s", qpqGroup, gr)
	}
	// default_postinst ran the init script's enable (START=95, STOP=10) in the root.
	for _, l := range []string{"etc/rc.d/S95qpq", "etc/rc.d/K10qpq"} {
		if dst, err := os.Readlink(r.path(l)); err != nil || dst != "../init.d/qpq" {
			t.Errorf("%s -> %q (%v), want ../init.d/qpq: post-install did not enable the service", l, dst, err)
		}
	}
	scripts := r.scripts(t, "qpq-"+v+".")
	for _, name := range []string{"post-install", "post-upgrade", "pre-deinstall"} {
		s := scripts[name]
		if !strings.Contains(s, `export pkgname="qpq"`) || !strings.Contains(s, ". \"${IPKG_INSTROOT}/lib/functions.sh\"") {
			t.Errorf("qpq %s has no %s script that hands over to OpenWrt's functions.sh (stale build/apk? run make apk):\n%s", v, name, s)
		}
	}
	if !strings.Contains(scripts["post-upgrade"], "export PKG_UPGRADE=1") || !strings.Contains(scripts["post-upgrade"], "default_postinst") {
		t.Errorf("post-upgrade does not run default_postinst with PKG_UPGRADE=1:\n%s", scripts["post-upgrade"])
	}
	if !strings.Contains(scripts["pre-deinstall"], "default_prerm") {
		t.Errorf("pre-deinstall does not run default_prerm:\n%s", scripts["pre-deinstall"])
	}
}

// scripts returns the maintainer scripts apk's database holds for the package whose
// names start with prefix (NAME-VERSION.), by type (post-install, ...).
func (r *apkRoot) scripts(t *testing.T, prefix string) map[string]string {
	t.Helper()
	f, err := os.Open(r.path("lib/apk/db/scripts.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("scripts.tar.gz: %v", err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("scripts.tar.gz: %v", err)
		}
		if !strings.HasPrefix(h.Name, prefix) {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("scripts.tar.gz %s: %v", h.Name, err)
		}
		out[h.Name[strings.LastIndex(h.Name, ".")+1:]] = string(b)
	}
}

// buildNewerAPKs writes, with the repository's mkapk, the packages of version v for every
// arch from build/bin, with a changed config, once per test run; it returns arch -> path.
func buildNewerAPKs(t *testing.T, tools, v string) map[string]string {
	t.Helper()
	newerAPK.once.Do(func() { newerAPK.byArch, newerAPK.err = mkapkAll(tools, v) })
	if newerAPK.err != nil {
		t.Fatal(newerAPK.err)
	}
	return newerAPK.byArch
}

var newerAPK struct {
	once   sync.Once
	byArch map[string]string
	err    error
}

func mkapkAll(tools, v string) (map[string]string, error) {
	files := filepath.Join(scratch, "apk-files-"+v)
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
	out := filepath.Join(scratch, "apk-"+v)
	bins, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "run", "./cross/cmd/mkapk", "-version", v, "-all", "-bindir", bins,
		"-files", files, "-targets", "cross/targets.txt", "-out", out, "-epoch", "0",
		"-apk", filepath.Join(tools, "bin", "apk"))
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkapk -version %s: %w\n%s", v, err, b)
	}
	paths, _ := filepath.Glob(filepath.Join(out, "*", "qpq-*.apk"))
	byArch := map[string]string{}
	for _, p := range paths {
		byArch[filepath.Base(filepath.Dir(p))] = p
	}
	return byArch, nil
}

// TestApkInstallUpgradeDelete takes the .apk of every architecture through a 25.12
// router's life with the real apk: install, edit /etc/config/qpq, upgrade (the edit kept,
// the new config beside it as qpq.apk-new), delete (the package's files and links gone).
func TestApkInstallUpgradeDelete(t *testing.T) {
	tools := owTools(t)
	v1, old := builtAPKs(t)
	_, ipks := builtIPKs(t)
	archs := make([]string, 0, len(old))
	for a := range old {
		archs = append(archs, a)
	}
	slices.Sort(archs)
	if got, want := archs, slices.Sorted(func(yield func(string) bool) {
		for a := range ipks {
			if !yield(a) {
				return
			}
		}
	}); !slices.Equal(got, want) {
		t.Errorf("build/apk has architectures %v, build/ipk %v", got, want)
	}
	v2 := newerVersion(t, v1)
	newer := buildNewerAPKs(t, tools, v2)
	newConfig := readFile(t, configFile) + upgradeMarker

	for _, arch := range archs {
		t.Run(arch, func(t *testing.T) {
			if newer[arch] == "" {
				t.Fatalf("mkapk wrote no %s package of %s", arch, v2)
			}
			r := newApkRoot(t, tools, arch)
			r.mustRun(t, "add", old[arch])
			r.checkInstalled(t, arch, v1)
			if got := readFile(t, r.path(ipk.QPQConfigPath)); got != readFile(t, configFile) {
				t.Errorf("installed config differs from %s (stale build/apk? run make apk)", configFile)
			}

			// A volunteer edits the config.
			shipped := readFile(t, r.path(ipk.QPQConfigPath))
			edited := strings.Replace(shipped, "option log_level 'info'", "option log_level 'debug'", 1)
			if edited == shipped {
				t.Fatal("shipped config has no option log_level 'info' to edit")
			}
			writeFile(t, r.dir, ipk.QPQConfigPath, edited, ipk.QPQConfigMode)

			out := r.mustRun(t, "add", newer[arch])
			t.Logf("upgrade: %s", out)
			r.checkInstalled(t, arch, v2)
			if got := readFile(t, r.path(ipk.QPQConfigPath)); got != edited {
				t.Errorf("upgrade did not keep the edited config; it holds:\n%s\napk said:\n%s", got, out)
			}
			if got := readFile(t, r.path(ipk.QPQConfigPath+".apk-new")); got != newConfig {
				t.Errorf("the new package's config is not beside it as %s.apk-new; it holds:\n%s", ipk.QPQConfigPath, got)
			}

			out = r.mustRun(t, "del", "qpq")
			t.Logf("delete: %s", out)
			if db := r.installed(t, "qpq"); db != nil {
				t.Errorf("after delete, apk still records qpq: %v", db)
			}
			for _, p := range []string{ipk.QPQBinPath, ipk.QPQInitPath, ipk.QPQKeepPath, "etc/rc.d/S95qpq", "etc/rc.d/K10qpq",
				"lib/apk/packages/qpq.list", "lib/apk/packages/qpq.conffiles"} {
				if exists(r.path(p)) {
					t.Errorf("%s left after delete", p)
				}
			}
			// apk keeps a modified file under /etc (a protected path) when it deletes the package.
			if !exists(r.path(ipk.QPQConfigPath)) || readFile(t, r.path(ipk.QPQConfigPath)) != edited {
				t.Errorf("delete did not leave the edited %s; apk said:\n%s", ipk.QPQConfigPath, out)
			}
			if r.installed(t, "libc") == nil {
				t.Error("delete took libc with it")
			}
		})
	}
}

// TestApkUpgradeReplacesUneditedConfig: a config nobody edited follows the package, and
// delete leaves nothing of it.
func TestApkUpgradeReplacesUneditedConfig(t *testing.T) {
	tools := owTools(t)
	v1, old := builtAPKs(t)
	arch := "x86_64"
	if old[arch] == "" {
		t.Fatalf("no %s package in %s", arch, apkDir)
	}
	newer := buildNewerAPKs(t, tools, newerVersion(t, v1))
	r := newApkRoot(t, tools, arch)
	r.mustRun(t, "add", old[arch])
	r.mustRun(t, "add", newer[arch])
	if got := readFile(t, r.path(ipk.QPQConfigPath)); got != readFile(t, configFile)+upgradeMarker {
		t.Errorf("an unedited config was not replaced by the new package's:\n%s", got)
	}
	if exists(r.path(ipk.QPQConfigPath + ".apk-new")) {
		t.Errorf("%s.apk-new written although the config was not edited", ipk.QPQConfigPath)
	}
	r.mustRun(t, "del", "qpq")
	if exists(r.path(ipk.QPQConfigPath)) {
		t.Errorf("delete left the unedited %s", ipk.QPQConfigPath)
	}
}

// TestApkRefusesWrongArch: a router's apk will not install another architecture's package.
func TestApkRefusesWrongArch(t *testing.T) {
	tools := owTools(t)
	_, byArch := builtAPKs(t)
	for _, c := range []struct{ router, pkg string }{
		{"x86_64", "mips_24kc"},
		{"mipsel_24kc", "mips_24kc"},
		{"arm_cortex-a9_vfpv3-d16", "aarch64_cortex-a53"},
	} {
		t.Run(c.pkg+"_on_"+c.router, func(t *testing.T) {
			if byArch[c.pkg] == "" {
				t.Fatalf("no %s package in %s", c.pkg, apkDir)
			}
			r := newApkRoot(t, tools, c.router)
			out, err := r.run(t, "add", byArch[c.pkg])
			if err == nil {
				t.Errorf("apk installed a %s package on %s:\n%s", c.pkg, c.router, out)
			}
			if !strings.Contains(out, "arch: "+c.pkg) || !strings.Contains(out, "uninstallable") {
				t.Errorf("apk's refusal does not name the architecture:\n%s", out)
			}
			if exists(r.path(ipk.QPQBinPath)) || r.installed(t, "qpq") != nil {
				t.Errorf("a refused package left files or a database entry:\n%s", out)
			}
		})
	}
}

// TestApkUpgradeHandsKeysToQPQ: keys a root-run 0.1 left in /etc/qpq become
// the qpq user's on an apk upgrade, unchanged, so the node keeps its identity.
func TestApkUpgradeHandsKeysToQPQ(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "installing files owned by another user needs root")
	}
	tools := owTools(t)
	v1, old := builtAPKs(t)
	arch := "x86_64"
	if old[arch] == "" {
		t.Fatalf("no %s package in %s", arch, apkDir)
	}
	newer := buildNewerAPKs(t, tools, newerVersion(t, v1))
	r := newApkRoot(t, tools, arch)
	r.mustRun(t, "add", old[arch])
	if err := os.MkdirAll(r.path("etc/qpq"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, r.dir, "etc/qpq/node.key", "old identity", 0o600)
	for _, p := range []string{"etc/qpq", "etc/qpq/node.key"} {
		if err := os.Chown(r.path(p), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	r.mustRun(t, "add", newer[arch])
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)
	ownedBy(t, r.dir, "etc/qpq/node.key", 7443, 7443, 0o600)
	if got := readFile(t, r.path("etc/qpq/node.key")); got != "old identity" {
		t.Errorf("node.key now holds %q", got)
	}
	if got := strings.Count(readFile(t, r.path("etc/passwd")), "\nqpq:"); got != 1 {
		t.Errorf("after upgrade /etc/passwd has %d qpq users, want 1", got)
	}
}
