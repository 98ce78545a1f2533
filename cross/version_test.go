package cross

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

// One version source (issue 10, item 5): the repository's Makefile says VERSION and
// RELEASE; the feed recipe says the same as PKG_VERSION and PKG_RELEASE; the .ipk is
// VERSION-RELEASE (what OpenWrt 24.10's SDK would name it), the .apk VERSION-rRELEASE
// (what 25.12's SDK names it), and `qpq version` says VERSION-RELEASE, as the SDK stamps it.

const topMake = "../Makefile"

// makeDefault returns the value of NAME ?= value in a Makefile, or "".
func makeDefault(mk, name string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*\?=\s*(.*)$`).FindStringSubmatch(mk)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// versions returns VERSION and RELEASE from the repository's Makefile.
func versions(t *testing.T) (version, release string) {
	t.Helper()
	mk := readFile(t, topMake)
	version, release = makeDefault(mk, "VERSION"), makeDefault(mk, "RELEASE")
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(version) || !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(release) {
		t.Fatalf("Makefile VERSION ?= %q RELEASE ?= %q, want MAJOR.MINOR.PATCH and a number from 1", version, release)
	}
	return version, release
}

func TestVersionOneSource(t *testing.T) {
	version, release := versions(t)
	top := readFile(t, topMake)
	feed := readFile(t, feedMake)
	if got := makeVar(feed, "PKG_VERSION"); got != version {
		t.Errorf("openwrt/Makefile PKG_VERSION:=%s, the Makefile's VERSION %s", got, version)
	}
	if got := makeVar(feed, "PKG_RELEASE"); got != release {
		t.Errorf("openwrt/Makefile PKG_RELEASE:=%s, the Makefile's RELEASE %s", got, release)
	}
	// Both stamp VERSION-RELEASE into `qpq version`.
	if got := makeVar(feed, "GO_PKG_LDFLAGS_X"); !strings.HasSuffix(got, "=$(PKG_VERSION)-$(PKG_RELEASE)") {
		t.Errorf("openwrt/Makefile stamps %q, want $(PKG_VERSION)-$(PKG_RELEASE)", got)
	}
	for _, want := range []string{"IPK_VERSION := $(VERSION)-$(RELEASE)", "APK_VERSION := $(VERSION)-r$(RELEASE)",
		"buildinfo.Version=$(IPK_VERSION)", "cross/build.sh $(IPK_VERSION)", "mkipk -version $(IPK_VERSION)", "mkapk -version $(APK_VERSION)"} {
		if !strings.Contains(top, want) {
			t.Errorf("Makefile lacks %q", want)
		}
	}

	// What make ipk and make apk built carries those versions, in each file's name too.
	v, ipks := builtIPKs(t)
	if want := version + "-" + release; v != want {
		t.Errorf("build/ipk holds version %s, want %s (stale? make clean ipk)", v, want)
	}
	av, _ := builtAPKs(t)
	if want := version + "-r" + release; av != want {
		t.Errorf("build/apk holds version %s, want %s (stale? make clean apk)", av, want)
	}
	if p := ipks["x86_64"]; p != "" && filepath.Base(p) != "qpq_"+version+"-"+release+"_x86_64.ipk" {
		t.Errorf("x86_64 package %s", p)
	}
	out, err := exec.Command(hostQPQBuilt(t), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), version+"-"+release) {
		t.Errorf("qpq version: %v %q, want %s-%s", err, out, version, release)
	}
}

// hostQPQBuilt is build/bin's binary for this machine (make cross stamps it), or a skip.
func hostQPQBuilt(t *testing.T) string {
	t.Helper()
	p := hostQPQ(t)
	if !strings.HasPrefix(p, mustAbs(t, binDir)) {
		missing(t, "no build/bin binary for this machine (run make cross)")
	}
	return p
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestVersionsOrderWithRealTools: opkg orders a 0.1 router's 0.1.0 below 0.1.0-1 below
// the next version, so upgrades go forward; apk takes 0.1.0-r1 and refuses 0.1.0-1.
func TestVersionsOrderWithRealTools(t *testing.T) {
	tools := owTools(t)
	version, release := versions(t)
	ipkV, apkV := version+"-"+release, version+"-r"+release
	r := newOpkgRoot(t, tools, "x86_64")
	for _, c := range [][2]string{{version, ipkV}, {ipkV, newerVersion(t, ipkV)}, {"0.1.0", "0.1.0-1"}, {"0.1.0-1", "0.2.0-1"}} {
		if out, err := r.run(t, "compare-versions", c[0], "<<", c[1]); err != nil {
			t.Errorf("opkg compare-versions %s '<<' %s: %v %s", c[0], c[1], err, out)
		}
		if _, err := r.run(t, "compare-versions", c[1], "<<", c[0]); err == nil {
			t.Errorf("opkg compare-versions %s '<<' %s holds too", c[1], c[0])
		}
	}
	apk := filepath.Join(tools, "bin", "apk")
	if out, err := exec.Command(apk, "version", "-c", apkV, "0.1.0-r1").CombinedOutput(); err != nil {
		t.Errorf("apk version -c %s: %v %s", apkV, err, out)
	}
	if out, err := exec.Command(apk, "version", "-c", ipkV).CombinedOutput(); err == nil {
		t.Errorf("apk version -c %s passes; apk should refuse opkg's spelling: %s", ipkV, out)
	}
	for _, c := range [][2]string{{apkV, newerVersion(t, apkV)}, {"0.1.0-r1", "0.2.0-r1"}} {
		out, err := exec.Command(apk, "version", "-t", c[0], c[1]).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "<" {
			t.Errorf("apk version -t %s %s: %v %q, want <", c[0], c[1], err, out)
		}
	}
}

// TestOpkgUpgradeFromPlainVersion: a router with a package of the plain version (as
// make ipk named 0.1 packages) upgrades to VERSION-RELEASE with the real opkg.
func TestOpkgUpgradeFromPlainVersion(t *testing.T) {
	tools := owTools(t)
	version, _ := versions(t)
	v, ipks := builtIPKs(t)
	if ipks["x86_64"] == "" {
		t.Fatalf("no x86_64 package in %s", ipkDir)
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./cross/cmd/mkipk", "-version", version, "-arch", "x86_64",
		"-bin", mustAbs(t, filepath.Join(binDir, "qpq_linux_amd64")), "-out", out, "-epoch", "0")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkipk -version %s: %v\n%s", version, err, b)
	}
	r := newOpkgRoot(t, tools, "x86_64")
	r.mustRun(t, "install", filepath.Join(out, "qpq_"+version+"_x86_64.ipk"))
	r.checkInstalled(t, "x86_64", version)
	o := r.mustRun(t, "install", ipks["x86_64"])
	if !strings.Contains(o, "Upgrading qpq") {
		t.Errorf("opkg did not upgrade %s to %s:\n%s", version, v, o)
	}
	r.checkInstalled(t, "x86_64", v)
}

// TestMaintainerAgrees: the Maintainer of the packages is the feed recipe's PKG_MAINTAINER
// and has the form Name <email>.
func TestMaintainerAgrees(t *testing.T) {
	feed := readFile(t, feedMake)
	if got := makeVar(feed, "PKG_MAINTAINER"); got != ipk.QPQMaintainer {
		t.Errorf("openwrt/Makefile PKG_MAINTAINER:=%q, ipk.QPQMaintainer %q", got, ipk.QPQMaintainer)
	}
	if ipk.QPQMaintainer != "" && !regexp.MustCompile(`^[^<>]+ <[^<>@\s]+@[^<>\s]+>$`).MatchString(ipk.QPQMaintainer) {
		t.Errorf("maintainer %q is not Name <email>", ipk.QPQMaintainer)
	}
	tools := owTools(t)
	_, ipks := builtIPKs(t)
	r := newOpkgRoot(t, tools, "x86_64")
	r.mustRun(t, "install", ipks["x86_64"])
	ctl := readFile(t, r.path("usr/lib/opkg/info/qpq.control"))
	if m := regexp.MustCompile(`(?m)^Maintainer: (.*)$`).FindStringSubmatch(ctl); (m == nil) != (ipk.QPQMaintainer == "") || m != nil && m[1] != ipk.QPQMaintainer {
		t.Errorf(".ipk control:\n%s\nwant Maintainer %q (absent when empty)", ctl, ipk.QPQMaintainer)
	}
	_, apks := builtAPKs(t)
	a := newApkRoot(t, tools, "x86_64")
	a.mustRun(t, "add", apks["x86_64"])
	if got := a.installed(t, "qpq")["m"]; got != ipk.QPQMaintainer {
		t.Errorf(".apk maintainer %q, want %q", got, ipk.QPQMaintainer)
	}
}

// TestMakeReleaseTagsWhatTheRecipeNames: `make release` in a clone makes the annotated
// tag openwrt/Makefile's PKG_SOURCE_VERSION names, on HEAD; it refuses a dirty tree and
// is a no-op when the tag is there.
func TestMakeReleaseTagsWhatTheRecipeNames(t *testing.T) {
	needTool(t, "git")
	needTool(t, "make")
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	makeRelease := func() (string, error) {
		cmd := exec.Command("make", "--no-print-directory", "release")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// A clone: the files the release step reads, committed.
	git("init", "-q")
	writeFile(t, dir, "Makefile", readFile(t, topMake), 0o644)
	writeFile(t, dir, "openwrt/Makefile", readFile(t, feedMake), 0o644)
	writeFile(t, dir, "build/junk", "ignored", 0o644)
	writeFile(t, dir, ".gitignore", "build/\n", 0o644)
	git("add", "-A")
	git("commit", "-q", "-m", "release")

	feed := readFile(t, feedMake)
	want := strings.ReplaceAll(makeVar(feed, "PKG_SOURCE_VERSION"), "$(PKG_VERSION)", makeVar(feed, "PKG_VERSION"))
	if strings.Contains(want, "$") || want == "" {
		t.Fatalf("PKG_SOURCE_VERSION:=%q names more than the version", makeVar(feed, "PKG_SOURCE_VERSION"))
	}

	writeFile(t, dir, "openwrt/files/new", "not committed", 0o644)
	if out, err := makeRelease(); err == nil || !strings.Contains(out, "not committed") {
		t.Errorf("make release on a dirty tree: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(dir, "openwrt/files")); err != nil {
		t.Fatal(err)
	}

	if out, err := makeRelease(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	if typ := git("cat-file", "-t", want); typ != "tag" {
		t.Errorf("%s is a %s, want an annotated tag", want, typ)
	}
	if got, head := git("rev-parse", want+"^{commit}"), git("rev-parse", "HEAD"); got != head {
		t.Errorf("%s is on %s, HEAD is %s", want, got, head)
	}
	if out, err := makeRelease(); err != nil || !strings.Contains(out, "already tags HEAD") {
		t.Errorf("make release again: %v\n%s", err, out)
	}
	// A new commit with the same version must raise it, not move the tag.
	writeFile(t, dir, "README", "more", 0o644)
	git("add", "-A")
	git("commit", "-q", "-m", "more")
	if out, err := makeRelease(); err == nil || !strings.Contains(out, "exists on another commit") {
		t.Errorf("make release with the tag on an older commit: %v\n%s", err, out)
	}
}
