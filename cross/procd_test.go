package cross

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The init script run as a router runs it: `/etc/init.d/qpq start` under busybox ash
// with OpenWrt's rc.common, procd.sh and jshn.sh, the real jshn and uci binaries, and the
// real qpq for `qpq config check`, in a chroot. Only ubus (procd's bus) and logger are
// stubs: ubus records every call, so the JSON it receives is what procd would be given.

// procdRoot is a chroot laid out like a router's root for the init script.
type procdRoot struct {
	dir string
}

// ubusStub records each call in /tmp/ubus-calls/N/ (one file per argument) and answers
// `call network.interface dump` from /etc/test/network.interface.dump.json.
const ubusStub = `#!/bin/sh
d=/tmp/ubus-calls
mkdir -p "$d"
n=$(ls "$d" | wc -l)
mkdir "$d/$n"
i=0
for a in "$@"; do
	printf '%s' "$a" >"$d/$n/$i"
	i=$((i + 1))
done
if [ "$1 $2 $3" = "call network.interface dump" ]; then
	cat /etc/test/network.interface.dump.json 2>/dev/null || echo '{"interface":[]}'
fi
exit 0
`

// loggerStub records system log lines in /tmp/syslog (there is no syslogd in the chroot).
const loggerStub = `#!/bin/sh
printf '%s\n' "$*" >>/tmp/syslog
`

func newProcdRoot(t *testing.T, config string) *procdRoot {
	t.Helper()
	r := newRouterRoot(t)
	copyFile(t, hostQPQ(t), r.path("usr/bin/qpq"), 0o755)
	copyFile(t, initScript, r.path("etc/init.d/qpq"), 0o755)
	writeFile(t, r.dir, "etc/config/qpq", config, 0o600)
	// OpenWrt's base-files users, and qpq's as the package's postinst adds it.
	writeFile(t, r.dir, "etc/passwd", basePasswd+qpqPasswd, 0o644)
	writeFile(t, r.dir, "etc/group", baseGroup+qpqGroup, 0o644)
	return r
}

// newRouterRoot is a chroot with what a router has before qpq is installed: busybox,
// OpenWrt's shell library, uci and jshn, the stub ubus and logger, a firewall config,
// netifd's interfaces (through the stub), base-files' users.
func newRouterRoot(t *testing.T) *procdRoot {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "running the init script in a chroot needs root")
	}
	tools := owTools(t)
	bb := needTool(t, "busybox")
	dir := t.TempDir()
	copyTree(t, filepath.Join(tools, "owroot"), dir)

	copyFile(t, bb, filepath.Join(dir, "bin/busybox"), 0o755)
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	uci, jshn := filepath.Join(tools, "bin/uci"), filepath.Join(tools, "bin/jshn")
	copyFile(t, uci, filepath.Join(dir, "sbin/uci"), 0o755)
	copyFile(t, jshn, filepath.Join(dir, "usr/bin/jshn"), 0o755)
	// The libraries at the paths the binaries look for them (tools/lib is their rpath).
	for _, lib := range sharedLibs(t, bb, uci, jshn) {
		copyFile(t, lib, filepath.Join(dir, lib), 0o755)
	}
	writeFile(t, dir, "usr/bin/ubus", ubusStub, 0o755)
	writeFile(t, dir, "usr/bin/logger", loggerStub, 0o755)
	writeFile(t, dir, "etc/config/firewall", testFirewall, 0o644)
	writeFile(t, dir, "etc/test/network.interface.dump.json", testInterfaces, 0o644)
	writeFile(t, dir, "etc/passwd", basePasswd, 0o644)
	writeFile(t, dir, "etc/group", baseGroup, 0o644)
	writeFile(t, dir, "etc/shadow", "root:::0:99999:7:::\n", 0o600)

	// /var is /tmp on a router.
	for _, d := range []string{"dev", "tmp/run", "tmp/lock", "etc/rc.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("tmp", filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(dir, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatalf("mknod /dev/null: %v", err)
	}
	return &procdRoot{dir: dir}
}

func (r *procdRoot) path(p string) string { return filepath.Join(r.dir, p) }

// /etc/passwd and /etc/group as OpenWrt's base-files ships them (the lines that matter).
const (
	basePasswd = "root:x:0:0:root:/root:/bin/ash\ndaemon:*:1:1:daemon:/var:/bin/false\n" +
		"network:*:101:101:network:/var:/bin/false\nnobody:*:65534:65534:nobody:/var:/bin/false\n"
	baseGroup = "root:x:0:\ndaemon:x:1:\nnetwork:x:101:\nnogroup:x:65534:\n"
)

// The lines user_add and group_add (OpenWrt's /lib/functions.sh) write for Require-User
// qpq=7443:qpq=7443, and group_add_user's member.
const (
	qpqPasswd = "qpq:x:7443:7443:qpq:/var/run/qpq:/bin/false\n"
	qpqGroup  = "qpq:x:7443:qpq\n"
)

// ownedBy asserts p in the root belongs to uid:gid with permission bits perm.
func ownedBy(t *testing.T, root, p string, uid, gid uint32, perm os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != perm {
		t.Errorf("%s: owner %d:%d mode %04o, want %d:%d %04o", p, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid, perm)
	}
}

// initd runs /etc/init.d/qpq ACTION in the chroot and returns its output.
func (r *procdRoot) initd(t *testing.T, action string) string {
	t.Helper()
	cmd := exec.Command("/etc/init.d/qpq", action)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.dir}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("/etc/init.d/qpq %s: %v", action, err)
	}
	return string(out)
}

// ubusCalls returns the recorded ubus calls in order, each as its arguments.
func (r *procdRoot) ubusCalls(t *testing.T) [][]string {
	t.Helper()
	ents, err := os.ReadDir(r.path("tmp/ubus-calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	calls := make([][]string, len(ents))
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n >= len(calls) {
			t.Fatalf("stray entry %s in ubus-calls", e.Name())
		}
		for i := 0; ; i++ {
			b, err := os.ReadFile(filepath.Join(r.path("tmp/ubus-calls"), e.Name(), strconv.Itoa(i)))
			if err != nil {
				break
			}
			calls[n] = append(calls[n], string(b))
		}
	}
	return calls
}

func (r *procdRoot) syslog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(r.path("tmp/syslog"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// procdService is the message `ubus call service set` carries (procd's service.set).
type procdService struct {
	Name      string                   `json:"name"`
	Script    string                   `json:"script"`
	Instances map[string]procdInstance `json:"instances"`
	Triggers  []json.RawMessage        `json:"triggers"`
}

type procdInstance struct {
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env"`
	Respawn     []string          `json:"respawn"`
	Stdout      bool              `json:"stdout"`
	Stderr      bool              `json:"stderr"`
	File        []string          `json:"file"`
	TermTimeout int               `json:"term_timeout"`
	User        string            `json:"user"`
	Group       string            `json:"group"`
	Data        struct {
		Firewall []map[string]string `json:"firewall"`
	} `json:"data"`
}

// start runs `/etc/init.d/qpq start` and returns the one service.set message it sent.
func (r *procdRoot) start(t *testing.T) (procdService, [][]string) {
	t.Helper()
	out := r.initd(t, "start")
	calls := r.ubusCalls(t)
	var sets []string
	for _, c := range calls {
		if len(c) == 4 && c[0] == "call" && c[1] == "service" && c[2] == "set" {
			sets = append(sets, c[3])
		}
	}
	if len(sets) != 1 {
		t.Fatalf("start made %d service.set calls, want 1; calls %q\noutput:\n%s\nsyslog:\n%s", len(sets), calls, out, r.syslog(t))
	}
	var s procdService
	if err := json.Unmarshal([]byte(sets[0]), &s); err != nil {
		t.Fatalf("service.set JSON: %v\n%s", err, sets[0])
	}
	t.Logf("service.set %s", sets[0])
	return s, calls
}

// instance returns the service's only instance.
func instance(t *testing.T, s procdService) procdInstance {
	t.Helper()
	if len(s.Instances) != 1 {
		t.Fatalf("service has %d instances, want 1: %+v", len(s.Instances), s.Instances)
	}
	for _, in := range s.Instances {
		return in
	}
	panic("unreachable")
}

// testFirewall is a router's /etc/config/firewall as the tests see it: OpenWrt's lan and
// wan zones (wan with wan and wan6), a community mesh zone written the older way (one
// option with two networks), and a guest zone.
const testFirewall = `config defaults
	option input 'REJECT'
	option forward 'REJECT'

config zone
	option name 'lan'
	list network 'lan'
	option input 'ACCEPT'

config zone
	option name 'wan'
	list network 'wan'
	list network 'wan6'
	option input 'REJECT'
	option masq '1'

config zone
	option name 'mesh'
	option network 'mesh mesh_vpn'

config zone
	option name 'guest'
	list network 'guest'

config forwarding
	option src 'lan'
	option dest 'wan'
`

// testInterfaces is what the stub ubus answers to `network.interface dump`, in netifd's
// form: lan up on br-lan; wan up on eth1 with pppoe-wan as its l3 device, wan6 on the
// same; mesh (batman-adv) up on bat0; mesh_vpn up without an l3 device, on eth0.3; guest
// down.
const testInterfaces = `{"interface":[
 {"interface":"lan","up":true,"pending":false,"available":true,"proto":"static","l3_device":"br-lan","device":"br-lan","ipv4-address":[{"address":"192.168.1.1","mask":24}]},
 {"interface":"wan","up":true,"pending":false,"available":true,"proto":"pppoe","l3_device":"pppoe-wan","device":"eth1"},
 {"interface":"wan6","up":true,"pending":false,"available":true,"proto":"dhcpv6","l3_device":"pppoe-wan","device":"@wan"},
 {"interface":"mesh","up":true,"pending":false,"available":true,"proto":"batadv","l3_device":"bat0","device":"bat0"},
 {"interface":"mesh_vpn","up":true,"pending":false,"available":true,"proto":"none","device":"eth0.3"},
 {"interface":"guest","up":false,"pending":false,"available":true,"proto":"static","device":"br-guest"}
]}`

// enabledConfig is the shipped config turned on with the real uci, as a volunteer does.
func enabledConfig(t *testing.T) string {
	t.Helper()
	tools := owTools(t)
	dir := t.TempDir()
	writeFile(t, dir, "qpq", readFile(t, configFile), 0o600)
	uci := filepath.Join(tools, "bin/uci")
	for _, args := range [][]string{{"set", "qpq.main.enabled=1"}, {"commit", "qpq"}} {
		if out, err := exec.Command(uci, append([]string{"-c", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("uci %s: %v\n%s", args, err, out)
		}
	}
	return readFile(t, filepath.Join(dir, "qpq"))
}

// nodeCommand is the command the service runs for a config: the node reads the file
// itself; only the mDNS devices come from the script.
func nodeCommand(extra ...string) []string {
	return append([]string{"/usr/bin/qpq", "node", "--uci", "/etc/config/qpq"}, extra...)
}

// Procd triggers the script adds: uci's qpq changing, and interfaces of the networks.
const configTrigger = `["config.change",["if",["eq","package","qpq"],["run_script","/etc/init.d/qpq","reload"]],1000]`

func interfaceTrigger(network string) string {
	return `["interface.*",["if",["eq","interface","` + network + `"],["run_script","/etc/init.d/qpq","reload"]],1000]`
}

func checkTriggers(t *testing.T, s procdService, want ...string) {
	t.Helper()
	var got []string
	for _, tr := range s.Triggers {
		got = append(got, compactJSON(t, tr))
	}
	if !slices.Equal(got, want) {
		t.Errorf("triggers\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
}

// checkNoWan: nothing of the wan zone reaches the node: no wan device in the command,
// no firewall rule from wan.
func checkNoWan(t *testing.T, in procdInstance) {
	t.Helper()
	for _, a := range in.Command {
		if strings.Contains(a, "pppoe-wan") || strings.Contains(a, "eth1") || strings.Contains(a, "wan") {
			t.Errorf("command %q names a wan device", in.Command)
		}
	}
	for _, r := range in.Data.Firewall {
		if r["src"] == "wan" || r["src"] == "*" || r["src"] == "" {
			t.Errorf("firewall rule %v opens the node to wan or every zone", r)
		}
	}
}

// TestProcdFreshInstallStartsNothing: the shipped config is off, so starting the service
// (as opkg's postinst does on a router) gives procd no instance: nothing listens and no
// firewall rule opens until the volunteer turns it on; the log says how.
func TestProcdFreshInstallStartsNothing(t *testing.T) {
	r := newProcdRoot(t, readFile(t, configFile))
	s := mustStart(t, r)
	if len(s.Instances) != 0 {
		t.Errorf("the shipped config started instances: %+v", s.Instances)
	}
	if log := r.syslog(t); !strings.Contains(log, "-t qpq -p daemon.notice not starting: disabled in /etc/config/qpq (uci set qpq.main.enabled=1; uci commit qpq)") {
		t.Errorf("log lacks the disabled notice:\n%s", log)
	}
	checkTriggers(t, s, configTrigger)
	if exists(r.path("etc/qpq")) {
		t.Error("a disabled service created its data dir")
	}
}

func TestProcdStartShippedConfigEnabled(t *testing.T) {
	r := newProcdRoot(t, enabledConfig(t))
	s, calls := r.start(t)
	if s.Name != "qpq" || s.Script != "/etc/init.d/qpq" {
		t.Errorf("service %q script %q, want qpq /etc/init.d/qpq", s.Name, s.Script)
	}
	in := instance(t, s)
	// mDNS on the lan zone's device only.
	if want := nodeCommand("--mdns-iface", "^br-lan$"); !slices.Equal(in.Command, want) {
		t.Errorf("command\n %q\nwant\n %q", in.Command, want)
	}
	// The node applies mem_limit itself.
	if len(in.Env) != 0 {
		t.Errorf("env %v, want none (the node applies mem_limit from uci)", in.Env)
	}
	if len(in.Respawn) != 3 {
		t.Errorf("respawn %q, want procd's three values (threshold, timeout, retries)", in.Respawn)
	}
	if !in.Stdout || !in.Stderr {
		t.Errorf("stdout %v stderr %v, want both to the log", in.Stdout, in.Stderr)
	}
	if !slices.Equal(in.File, []string{"/etc/config/qpq"}) {
		t.Errorf("file %v, want /etc/config/qpq (a changed config restarts the instance)", in.File)
	}
	if in.TermTimeout != 10 {
		t.Errorf("term_timeout %d, want 10", in.TermTimeout)
	}
	checkTriggers(t, s, configTrigger, interfaceTrigger("lan"))
	// The QUIC port and mDNS, from the lan zone only.
	checkFirewall(t, in.Data.Firewall, []fwRule{{"lan", "7443", ""}, {"lan", "5353", ""}})
	checkNoWan(t, in)
	// service_started tells procd the firewall changed.
	last := calls[len(calls)-1]
	if len(last) != 4 || last[2] != "event" || compactJSON(t, json.RawMessage(last[3])) != `{"data":{"package":"firewall"},"type":"config.change"}` {
		t.Errorf("last ubus call %q, want the firewall config.change event", last)
	}
	// The node runs as qpq, in dirs of its own.
	if in.User != "qpq" {
		t.Errorf("user %q, want qpq (the service must not run as root)", in.User)
	}
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)
	ownedBy(t, r.dir, "tmp/qpq", 7443, 7443, 0o700)
	ownedBy(t, r.dir, "tmp/run/qpq", 7443, 7443, 0o750)
}

// TestProcdMdnsOnZoneDevices: mDNS runs on the up devices of the zones' networks (an
// l3 device first, else the device, each as an exact regexp), never on wan's.
func TestProcdMdnsOnZoneDevices(t *testing.T) {
	r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n\tlist zone 'lan'\n\tlist zone 'mesh'\n")
	s := mustStart(t, r)
	in := instance(t, s)
	want := nodeCommand("--mdns-iface", "^br-lan$", "--mdns-iface", "^bat0$", "--mdns-iface", `^eth0\.3$`)
	if !slices.Equal(in.Command, want) {
		t.Errorf("command\n %q\nwant\n %q", in.Command, want)
	}
	checkTriggers(t, s, configTrigger, interfaceTrigger("lan"), interfaceTrigger("mesh"), interfaceTrigger("mesh_vpn"))
	checkFirewall(t, in.Data.Firewall, []fwRule{{"lan", "7443", ""}, {"lan", "5353", ""}, {"mesh", "7443", ""}, {"mesh", "5353", ""}})
	checkNoWan(t, in)
}

// TestProcdMdnsWaitsForInterfaces: with none of the zones' interfaces up, the node runs
// without mDNS (not on every interface), the log says why, and the interface trigger
// brings it in on the reload that follows the interface coming up.
func TestProcdMdnsWaitsForInterfaces(t *testing.T) {
	r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n\tlist zone 'guest'\n")
	s := mustStart(t, r)
	in := instance(t, s)
	if want := nodeCommand("--mdns=false"); !slices.Equal(in.Command, want) {
		t.Errorf("command\n %q\nwant\n %q", in.Command, want)
	}
	checkFirewall(t, in.Data.Firewall, []fwRule{{"guest", "7443", ""}})
	checkTriggers(t, s, configTrigger, interfaceTrigger("guest"))
	if log := r.syslog(t); !strings.Contains(log, "daemon.notice mDNS waits for the interfaces of zones 'guest'") {
		t.Errorf("log lacks the mDNS notice:\n%s", log)
	}

	// netifd brings guest up; procd runs the trigger's reload.
	writeFile(t, r.dir, "etc/test/network.interface.dump.json",
		strings.Replace(testInterfaces, `"interface":"guest","up":false`, `"interface":"guest","up":true,"l3_device":"br-guest"`, 1), 0o644)
	before := len(r.ubusCalls(t))
	out := r.initd(t, "reload")
	s = lastServiceSet(t, r.ubusCalls(t)[before:], out)
	if in := instance(t, s); !slices.Equal(in.Command, nodeCommand("--mdns-iface", "^br-guest$")) {
		t.Errorf("after guest came up, command %q, want mDNS on br-guest", in.Command)
	}
}

// lastServiceSet returns the service of the one service.set among calls.
func lastServiceSet(t *testing.T, calls [][]string, out string) procdService {
	t.Helper()
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		if len(c) == 4 && slices.Equal(c[:3], []string{"call", "service", "set"}) {
			var s procdService
			if err := json.Unmarshal([]byte(c[3]), &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("no service set among ubus calls %q\n%s", calls, out)
	return procdService{}
}

// TestProcdMdnsOffOrNamed: mdns off gives the node no mDNS flag and opens no 5353; a
// config with its own mdns_iface list leaves the interfaces to the node (it reads them).
func TestProcdMdnsOffOrNamed(t *testing.T) {
	for _, c := range []struct {
		name, config string
		fw           []fwRule
	}{
		{"off", "\toption mdns '0'\n", []fwRule{{"lan", "7443", ""}}},
		{"named", "\tlist mdns_iface '^br-'\n", []fwRule{{"lan", "7443", ""}, {"lan", "5353", ""}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n"+c.config)
			s := mustStart(t, r)
			in := instance(t, s)
			if want := nodeCommand(); !slices.Equal(in.Command, want) {
				t.Errorf("command\n %q\nwant\n %q", in.Command, want)
			}
			checkFirewall(t, in.Data.Firewall, c.fw)
			checkTriggers(t, s, configTrigger)
		})
	}
}

// TestProcdHandsOldKeysToQPQ: a 0.1 node's data (root's, 0600) and store are the new
// user's after start, so the node keeps its identity instead of failing on them.
func TestProcdHandsOldKeysToQPQ(t *testing.T) {
	r := newProcdRoot(t, enabledConfig(t))
	for _, d := range []string{"etc/qpq", "tmp/qpq"} {
		if err := os.MkdirAll(r.path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, r.dir, "etc/qpq/node.key", "old identity", 0o600)
	writeFile(t, r.dir, "etc/qpq/onion.key", "old onion key", 0o600)
	writeFile(t, r.dir, "tmp/qpq/store.db", "old store", 0o600)
	if in := instance(t, mustStart(t, r)); in.User != "qpq" {
		t.Errorf("user %q, want qpq", in.User)
	}
	for _, p := range []string{"etc/qpq/node.key", "etc/qpq/onion.key", "tmp/qpq/store.db"} {
		ownedBy(t, r.dir, p, 7443, 7443, 0o600)
	}
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)
	if got := readFile(t, r.path("etc/qpq/node.key")); got != "old identity" {
		t.Errorf("node.key now holds %q", got)
	}
}

// TestProcdRefusesWithoutUser: with no qpq user (a broken install) the service does
// not fall back to root; the log says why.
func TestProcdRefusesWithoutUser(t *testing.T) {
	r := newProcdRoot(t, enabledConfig(t))
	writeFile(t, r.dir, "etc/passwd", basePasswd, 0o644)
	if s := mustStart(t, r); len(s.Instances) != 0 {
		t.Errorf("started without a qpq user: %+v", s.Instances)
	}
	if log := r.syslog(t); !strings.Contains(log, "not starting: no user qpq") {
		t.Errorf("log lacks the missing user:\n%s", log)
	}
}

// TestProcdRefusesSystemDir: a data or store dir the system shares is never handed to
// qpq (chown -R /etc would break the router).
func TestProcdRefusesSystemDir(t *testing.T) {
	for _, c := range []struct{ option, dir string }{{"data", "/etc"}, {"store", "/tmp/store.db"}} {
		t.Run(c.option, func(t *testing.T) {
			r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n\toption "+c.option+" '"+c.dir+"'\n")
			if s := mustStart(t, r); len(s.Instances) != 0 {
				t.Errorf("started with %s %s: %+v", c.option, c.dir, s.Instances)
			}
			if log := r.syslog(t); !strings.Contains(log, "is a system directory") {
				t.Errorf("log lacks the refusal:\n%s", log)
			}
			ownedBy(t, r.dir, "etc", 0, 0, 0o755)
			ownedBy(t, r.dir, "tmp", 0, 0, 0o755)
		})
	}
}

func compactJSON(t *testing.T, m json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		t.Fatalf("json %s: %v", m, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testFP is a well-formed fingerprint (52 base32 characters, canonical last one).
const testFP = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrsq"

func TestProcdStartCustomConfig(t *testing.T) {
	r := newProcdRoot(t, `config qpq 'main'
	option enabled '1'
	option listen '192.168.1.1:9000'
	option data '/mnt/qpq'
	option log_level 'debug'
	option store '/mnt/qpq/store.db'
	option mdns '0'
	option mem_limit '64M'
	list zone 'lan'
	list zone 'mesh'
	list peer '192.0.2.10:7443#`+testFP+`'
	list peer '[2001:db8::10]:7443#`+testFP+`'
`)
	in := instance(t, mustStart(t, r))
	// Everything but the firewall and mDNS devices is the node's to read.
	if want := nodeCommand(); !slices.Equal(in.Command, want) {
		t.Errorf("command\n %q\nwant\n %q", in.Command, want)
	}
	if len(in.Env) != 0 {
		t.Errorf("env %v, want none (the node applies mem_limit)", in.Env)
	}
	// Port 9000 on the listen address from each zone listed; nothing for mDNS (off).
	checkFirewall(t, in.Data.Firewall, []fwRule{{"lan", "9000", "192.168.1.1"}, {"mesh", "9000", "192.168.1.1"}})
	ownedBy(t, r.dir, "mnt/qpq", 7443, 7443, 0o700)
}

// fwRule is what a firewall rule in the procd data opens: UDP to port (on destIP) from zone.
type fwRule struct{ zone, port, destIP string }

// checkFirewall asserts the procd firewall data holds exactly these ACCEPT rules, in order.
func checkFirewall(t *testing.T, got []map[string]string, want []fwRule) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("firewall data %v, want %d rules %v", got, len(want), want)
		return
	}
	for i, w := range want {
		g := got[i]
		if g["type"] != "rule" || g["src"] != w.zone || g["dest_port"] != w.port || g["dest_ip"] != w.destIP ||
			g["proto"] != "udp" || g["target"] != "ACCEPT" || g["name"] == "" {
			t.Errorf("firewall rule %d: %v, want a named ACCEPT rule for UDP %s from zone %q (dest_ip %q)", i, g, w.port, w.zone, w.destIP)
		}
	}
	names := map[string]bool{}
	for _, g := range got {
		if names[g["name"]] {
			t.Errorf("firewall rule name %q twice", g["name"])
		}
		names[g["name"]] = true
	}
}

// TestProcdFirewallDefaultsToLan: a config that names no zone opens the ports from lan
// only, never from every zone ('*') or wan.
func TestProcdFirewallDefaultsToLan(t *testing.T) {
	r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n")
	in := instance(t, mustStart(t, r))
	checkFirewall(t, in.Data.Firewall, []fwRule{{"lan", "7443", ""}, {"lan", "5353", ""}})
	checkNoWan(t, in)
}

// mustStart is start without the calls.
func mustStart(t *testing.T, r *procdRoot) procdService {
	t.Helper()
	s, _ := r.start(t)
	return s
}

// TestProcdConfigCheckStopsStart: a config the real `qpq config check` refuses gives
// procd a service with no instance (nothing runs), and the check's findings reach the log.
func TestProcdConfigCheckStopsStart(t *testing.T) {
	r := newProcdRoot(t, `config qpq 'main'
	option enabled '1'
	option listen '[::]:99999'
	option data '/mnt/qpq'
`)
	s := mustStart(t, r)
	if len(s.Instances) != 0 {
		t.Errorf("a refused config started instances: %+v", s.Instances)
	}
	log := r.syslog(t)
	for _, want := range []string{
		"-t qpq -p daemon.err not starting: /etc/config/qpq has problems",
		`-t qpq -p daemon.err /etc/config/qpq:3: main.listen: "[::]:99999"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if exists(r.path("mnt/qpq")) {
		t.Error("a refused config still created the data dir")
	}
}

// TestShippedConfigExamplesPass: the shipped config, with its commented examples taken
// in, parses with the real uci and passes the real `qpq config check`, so a volunteer
// who uncomments a line (and puts in a real fingerprint) gets no surprise.
func TestShippedConfigExamplesPass(t *testing.T) {
	tools := owTools(t)
	qpq := hostQPQ(t)
	example := regexp.MustCompile(`(?m)^(\s*)# ((?:list|option) \w+ '[^']*')$`)
	shipped := readFile(t, configFile)
	if !example.MatchString(shipped) {
		t.Fatal("no commented example in the shipped config")
	}
	dir := t.TempDir()
	writeFile(t, dir, "qpq", example.ReplaceAllString(shipped, "$1$2"), 0o600)
	out, err := exec.Command(filepath.Join(tools, "bin/uci"), "-c", dir, "show", "qpq").CombinedOutput()
	if err != nil {
		t.Fatalf("uci show: %v\n%s", err, out)
	}
	for _, want := range []string{"qpq.main.peer=", "qpq.main.mdns_iface='^br-'", "qpq.main.zone='lan'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("uci show lacks %s:\n%s", want, out)
		}
	}
	if out, err := exec.Command(qpq, "config", "check", filepath.Join(dir, "qpq")).CombinedOutput(); err != nil {
		t.Errorf("qpq config check refuses the shipped examples: %v\n%s", err, out)
	}
}

// TestProcdStopAndReload: stop asks procd to delete the service and tells the firewall;
// reload (the script has no reload_service) sends the service again, now with the
// changed config.
func TestProcdStopAndReload(t *testing.T) {
	r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n")
	in := instance(t, mustStart(t, r))
	if !slices.Equal(in.Command, nodeCommand("--mdns-iface", "^br-lan$")) {
		t.Errorf("command %q, want mDNS on br-lan", in.Command)
	}
	before := len(r.ubusCalls(t))

	out := r.initd(t, "stop")
	calls := r.ubusCalls(t)[before:]
	if len(calls) != 2 || !slices.Equal(calls[0][:3], []string{"call", "service", "delete"}) ||
		compactJSON(t, json.RawMessage(calls[0][3])) != `{"name":"qpq"}` || calls[1][2] != "event" {
		t.Errorf("stop made ubus calls %q, want service delete of qpq, then the firewall event\n%s", calls, out)
	}

	writeFile(t, r.dir, "etc/config/qpq", "config qpq 'main'\n\toption enabled '1'\n\toption mdns '0'\n", 0o600)
	before = len(r.ubusCalls(t))
	out = r.initd(t, "reload")
	calls = r.ubusCalls(t)[before:]
	if len(calls) == 0 || !slices.Equal(calls[0][:3], []string{"call", "service", "set"}) {
		t.Fatalf("reload made ubus calls %q, want service set\n%s", calls, out)
	}
	var s procdService
	if err := json.Unmarshal([]byte(calls[0][3]), &s); err != nil {
		t.Fatal(err)
	}
	if in := instance(t, s); !slices.Equal(in.Command, nodeCommand()) || len(in.Data.Firewall) != 1 {
		t.Errorf("after reload, command %q firewall %v, want the changed config's: no mDNS", in.Command, in.Data.Firewall)
	}
}

// TestProcdControlInDataDir: a control socket in the data dir leaves that dir 0700
// (the control dir's 0750 is for a dir of its own).
func TestProcdControlInDataDir(t *testing.T) {
	r := newProcdRoot(t, "config qpq 'main'\n\toption enabled '1'\n\toption control '/etc/qpq/qpq.sock'\n")
	if len(mustStart(t, r).Instances) != 1 {
		t.Fatalf("not started:\n%s", r.syslog(t))
	}
	ownedBy(t, r.dir, "etc/qpq", 7443, 7443, 0o700)
	if exists(r.path("tmp/run/qpq")) {
		t.Error("/var/run/qpq created although the socket is elsewhere")
	}
}
