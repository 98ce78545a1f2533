package cross

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Installing on a running router (issue 10, item 1: start on install). On a live router
// opkg's default_postinst (and the .apk's post-install, which runs the same) enables the
// init script and starts it. The shipped config is off, so that start gives procd no
// instance: a plain router exposes nothing until its owner runs
// `uci set qpq.main.enabled=1; uci commit qpq`. After that the service starts, and an
// upgrade keeps the edited config, so it starts again. Here the router is a chroot with
// the real opkg or apk, OpenWrt's shell library, uci and jshn, and the stub ubus that
// records what procd is given (procd_test.go).

// run runs a command in the chroot, as root with a router's environment.
func (r *procdRoot) run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.dir}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *procdRoot) mustRunIn(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := r.run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s in the router: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// serviceSets returns the service.set messages among ubus calls from index from on.
func (r *procdRoot) serviceSets(t *testing.T, from int) []procdService {
	t.Helper()
	var sets []procdService
	calls := r.ubusCalls(t)
	for _, c := range calls[min(from, len(calls)):] {
		if len(c) == 4 && slices.Equal(c[:3], []string{"call", "service", "set"}) {
			sets = append(sets, lastServiceSet(t, [][]string{c}, ""))
		}
	}
	return sets
}

// addTool copies a host binary of the tools into the router with its libraries.
func (r *procdRoot) addTool(t *testing.T, src, dst string) {
	t.Helper()
	copyFile(t, src, r.path(dst), 0o755)
	for _, lib := range sharedLibs(t, src) {
		if !exists(r.path(lib)) {
			copyFile(t, lib, r.path(lib), 0o755)
		}
	}
}

// liveLifecycle installs pkg (the x86_64 package, whose qpq runs here) with install,
// enables qpq with the real uci and starts it, then upgrades with newer and checks the
// service starts again with the edited config kept.
func liveLifecycle(t *testing.T, r *procdRoot, install func(pkg string) string, pkg, newer string) {
	t.Helper()
	copyFile(t, pkg, r.path("tmp/pkg/"+filepath.Base(pkg)), 0o644)
	copyFile(t, newer, r.path("tmp/newer/"+filepath.Base(newer)), 0o644)

	out := install("/tmp/pkg/" + filepath.Base(pkg))
	t.Logf("install: %s", out)
	sets := r.serviceSets(t, 0)
	if len(sets) != 1 {
		t.Fatalf("install started the service %d times, want once (default_postinst's start)\n%s", len(sets), out)
	}
	if len(sets[0].Instances) != 0 {
		t.Errorf("a fresh install started the node: %+v", sets[0].Instances)
	}
	if log := r.syslog(t); !strings.Contains(log, "not starting: disabled in /etc/config/qpq (uci set qpq.main.enabled=1; uci commit qpq)") {
		t.Errorf("log lacks how to turn qpq on:\n%s", log)
	}
	for _, l := range []string{"etc/rc.d/S95qpq", "etc/rc.d/K10qpq"} {
		if !exists(r.path(l)) {
			t.Errorf("%s missing: install did not enable the init script (it starts at boot, then reads enabled)", l)
		}
	}
	if exists(r.path("etc/qpq")) {
		t.Error("a fresh, disabled install created the data dir")
	}

	// The volunteer turns it on.
	r.mustRunIn(t, "/sbin/uci", "set", "qpq.main.enabled=1")
	r.mustRunIn(t, "/sbin/uci", "commit", "qpq")
	before := len(r.ubusCalls(t))
	out = r.mustRunIn(t, "/etc/init.d/qpq", "start")
	sets = r.serviceSets(t, before)
	if len(sets) != 1 || len(sets[0].Instances) != 1 {
		t.Fatalf("after enabling, start gave %+v\n%s\nsyslog:\n%s", sets, out, r.syslog(t))
	}
	if in := instance(t, sets[0]); in.User != "qpq" || !slices.Equal(in.Command[:4], nodeCommand()) {
		t.Errorf("enabled service: user %q command %q", in.User, in.Command)
	}
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)

	// An upgrade keeps the edited config: the postinst's start starts the node again.
	before = len(r.ubusCalls(t))
	out = install("/tmp/newer/" + filepath.Base(newer))
	t.Logf("upgrade: %s", out)
	sets = r.serviceSets(t, before)
	if len(sets) == 0 || len(sets[len(sets)-1].Instances) != 1 {
		t.Errorf("after the upgrade the service is not running: %+v\n%s\nsyslog:\n%s", sets, out, r.syslog(t))
	}
	if cfg := readFile(t, r.path("etc/config/qpq")); !strings.Contains(cfg, "option enabled '1'") {
		t.Errorf("the upgrade lost enabled=1:\n%s", cfg)
	}
}

func TestOpkgLiveInstallStartsNothingUntilEnabled(t *testing.T) {
	tools := owTools(t)
	_, ipks := builtIPKs(t)
	if ipks["x86_64"] == "" {
		t.Fatalf("no x86_64 package in %s", ipkDir)
	}
	v, _ := builtIPKs(t)
	newer := buildNewer(t, newerVersion(t, v))
	r := newRouterRoot(t)
	r.addTool(t, filepath.Join(tools, "bin", "opkg-cl"), "bin/opkg")
	writeFile(t, r.dir, "etc/opkg.conf", "dest root /\ndest ram /tmp\nlists_dir ext /var/opkg-lists\noption overlay_root /overlay\narch all 1\narch noarch 1\narch x86_64 10\n", 0o644)
	writeFile(t, r.dir, "usr/lib/opkg/status",
		"Package: libc\nVersion: 1.2.5-r4\nStatus: install user installed\nArchitecture: x86_64\nInstalled-Time: 1700000000\n\n", 0o644)
	writeFile(t, r.dir, "usr/lib/opkg/info/libc.control", "Package: libc\nVersion: 1.2.5-r4\nArchitecture: x86_64\n", 0o644)
	if err := os.MkdirAll(r.path("var/lock"), 0o755); err != nil {
		t.Fatal(err)
	}
	liveLifecycle(t, r, func(pkg string) string {
		return r.mustRunIn(t, "/bin/opkg", "install", pkg)
	}, ipks["x86_64"], newer["x86_64"])
}

func TestApkLiveInstallStartsNothingUntilEnabled(t *testing.T) {
	tools := owTools(t)
	v, apks := builtAPKs(t)
	if apks["x86_64"] == "" {
		t.Fatalf("no x86_64 package in %s", apkDir)
	}
	newer := buildNewerAPKs(t, tools, newerVersion(t, v))
	r := newRouterRoot(t)
	apk := filepath.Join(tools, "bin", "apk")
	r.addTool(t, apk, "sbin/apk")
	writeFile(t, r.dir, "etc/apk/arch", "x86_64\n", 0o644)
	libc := filepath.Join(t.TempDir(), "libc.apk")
	if out, err := exec.Command(apk, "mkpkg", "--info", "name:libc", "--info", "version:1.2.5-r4",
		"--info", "arch:x86_64", "--output", libc).CombinedOutput(); err != nil {
		t.Fatalf("apk mkpkg libc: %v\n%s", err, out)
	}
	copyFile(t, libc, r.path("tmp/libc.apk"), 0o644)
	r.mustRunIn(t, "/sbin/apk", "--allow-untrusted", "--no-network", "--initdb", "add", "/tmp/libc.apk")
	liveLifecycle(t, r, func(pkg string) string {
		return r.mustRunIn(t, "/sbin/apk", "--allow-untrusted", "--no-network", "--no-cache", "add", pkg)
	}, apks["x86_64"], newer["x86_64"])
}
