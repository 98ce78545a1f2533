package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// unavailable fails under CI=true, where .ci/run installs every tool the
// tests need (DESIGN, "Running nodes on this machine"), and skips
// elsewhere.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format+"; CI must provide it", args...)
	}
	t.Skipf("skipping: "+format, args...)
}

// needTool returns the path of a command from Debian package pkg.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, "needs %s (Debian package %s)", name, pkg)
	}
	return path
}

// helperProc is a helper daemon (dbus-daemon, avahi-daemon) that the test
// stops when it ends.
type helperProc struct {
	name   string
	cmd    *exec.Cmd
	log    *syncBuf
	exited chan error // receives Wait's result once, then is closed
}

func startDaemon(t *testing.T, name string, env []string, argv ...string) *helperProc {
	t.Helper()
	d := &helperProc{name: name, log: &syncBuf{}, exited: make(chan error, 1)}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(cleanEnv(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.exited <- d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		// SIGTERM first so avahi withdraws its records and dbus removes
		// its socket; a stuck daemon is killed.
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.log)
		}
	})
	return d
}

// running reports whether the daemon is still up.
func (d *helperProc) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// startBus runs a private D-Bus system bus inside namespace ns and
// returns its address. Its socket is a path in the test's temp dir:
// path sockets, unlike abstract ones, are reachable from any network
// namespace, so avahi-daemon and avahi-browse share it.
func startBus(t *testing.T, ns string) string {
	t.Helper()
	bin := needTool(t, "dbus-daemon", "dbus-daemon")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	if len(sock) >= 108 {
		t.Fatalf("bus socket path %s is too long for a unix socket", sock)
	}
	conf := filepath.Join(dir, "bus.conf")
	// A permissive policy: the bus holds only this test's two clients.
	err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=`+sock+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
`), 0o644)
	if err != nil {
		t.Fatalf("write bus config: %v", err)
	}
	d := startDaemon(t, "dbus-daemon", nil, "ip", "netns", "exec", ns, bin, "--config-file="+conf, "--nofork", "--nopidfile", "--nosyslog")
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "dbus-daemon to listen on "+sock, func() bool {
		if !d.running() {
			unavailable(t, "dbus-daemon cannot run here:\n%s", d.log)
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return "unix:path=" + sock
}

// startAvahiDBus runs avahi-daemon on eth0 of namespace ns, registered on
// the bus at busAddr, with a private /run (as mesh/discovery's namespace
// tests do: ip netns exec gives it its own mount namespace).
func startAvahiDBus(t *testing.T, ns, busAddr string) {
	t.Helper()
	bin := needTool(t, "avahi-daemon", "avahi-daemon")
	conf := filepath.Join(t.TempDir(), "avahi.conf")
	err := os.WriteFile(conf, []byte("[server]\nhost-name=qpqavahi\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=eth0\nenable-dbus=yes\n"+
		"[wide-area]\nenable-wide-area=no\n[publish]\npublish-addresses=yes\n"), 0o644)
	if err != nil {
		t.Fatalf("write avahi config: %v", err)
	}
	script := `mount -t tmpfs qpqtest /run && mkdir -p /run/avahi-daemon && exec "$0" --no-drop-root --no-chroot --no-rlimits -f "$1"`
	d := startDaemon(t, "avahi-daemon", []string{"DBUS_SYSTEM_BUS_ADDRESS=" + busAddr},
		"ip", "netns", "exec", ns, "sh", "-c", script, bin, conf)
	// avahi says this once it is on the bus, has bound 5353 and has
	// probed its host name.
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "avahi-daemon to start in "+ns, func() bool {
		if !d.running() {
			unavailable(t, "avahi-daemon cannot run in a namespace:\n%s", d.log)
		}
		return strings.Contains(d.log.String(), "Server startup complete")
	})
}

// avahiEntry is one resolved ("=") line of avahi-browse -p.
type avahiEntry struct {
	iface, proto, name, host, addr, port, txt string
}

// avahiBrowse runs avahi-browse -rpt for qpq's service in namespace ns and
// returns the resolved entries.
func avahiBrowse(t *testing.T, ns, busAddr string) ([]avahiEntry, string) {
	t.Helper()
	bin := needTool(t, "avahi-browse", "avahi-utils")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "-rpt", "_quicproquo._udp")
	cmd.Env = append(cleanEnv(), "DBUS_SYSTEM_BUS_ADDRESS="+busAddr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("avahi-browse: %v\n%s", err, out)
	}
	var es []avahiEntry
	for _, line := range strings.Split(string(out), "\n") {
		// =;iface;proto;name;type;domain;host;address;port;txt
		f := strings.SplitN(line, ";", 10)
		if len(f) != 10 || f[0] != "=" || f[4] != "_quicproquo._udp" {
			continue
		}
		es = append(es, avahiEntry{iface: f[1], proto: f[2], name: f[3], host: f[6], addr: f[7], port: f[8], txt: f[9]})
	}
	return es, string(out)
}

// TestNetnsAvahiBrowseListsNodes runs avahi-daemon, with D-Bus, in the
// namespace of one of two qpq nodes: avahi-browse must list and resolve
// both nodes, and the nodes must still find each other by their own mDNS.
func TestNetnsAvahiBrowseListsNodes(t *testing.T) {
	for _, tool := range [][2]string{{"dbus-daemon", "dbus-daemon"}, {"avahi-daemon", "avahi-daemon"}, {"avahi-browse", "avahi-utils"}} {
		needTool(t, tool[0], tool[1])
	}
	r := needNetns(t)
	n1, n2 := r.addNode(1), r.addNode(2)
	bus := startBus(t, n1)
	// avahi binds 5353 first; qpq in the same namespace must share it.
	startAvahiDBus(t, n1, bus)
	ps := []*proc{
		startNodeIn(t, n1, "10.78.0.1:7443"),
		startNodeIn(t, n2, "10.78.0.2:7443"),
	}
	fps := []string{ps[0].fp(), ps[1].fp()}

	testkit.WaitForEvery(t, 60*time.Second, procPoll, "the two nodes to link with no --peer beside avahi", func() bool {
		return ps[0].linkedTo(fps[1]) && ps[1].linkedTo(fps[0])
	})
	ends := map[string]bool{}
	for i, p := range ps {
		for _, peer := range p.mustStatus().Peers {
			if peer.Fingerprint == fps[1-i] {
				ends[peer.Via] = true
			}
		}
	}
	if !ends["mdns"] || ends["static"] {
		t.Fatalf("the link's ends say %v; want one dialled after an mDNS sighting", ends)
	}

	// avahi sees the node it shares 5353 with and the one across the
	// bridge, resolving SRV, A and TXT from qpq's own responder.
	var last string
	testkit.WaitForEvery(t, 60*time.Second, procPoll, "avahi-browse to resolve both qpq nodes", func() bool {
		es, out := avahiBrowse(t, n1, bus)
		last = out
		for i, fp := range fps {
			want := fmt.Sprintf("10.78.0.%d", i+1)
			found := false
			for _, e := range es {
				if e.name == fp && strings.Contains(e.txt, `"id=`+fp+`"`) && e.addr == want && e.port == "7443" {
					found = true
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
	for _, e := range strings.Split(last, "\n") {
		if strings.HasPrefix(e, "=") && !strings.Contains(e, ";10.78.0.") && !strings.Contains(e, ";fe80::") {
			t.Errorf("avahi-browse resolved an address outside the test's namespaces: %s", e)
		}
	}
	t.Logf("avahi-browse -rpt _quicproquo._udp:\n%s", last)
}
