package cross

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// One reading of uci (issue 10, item 2): each config below, of the kinds that once
// passed `qpq config check` and then ran differently, goes through the real init
// script (rc.common, procd.sh, jshn, the real uci and qpq) and through the real `qpq
// config check`. The service starts exactly when the check passes with enabled on, and
// then the command procd gets is `qpq node --uci /etc/config/qpq` (the node reads the
// file through the check's own code) plus the mDNS devices, and the parts the script
// derives (firewall, mDNS, dirs) follow the check's --shell output.

// shellVars parses `qpq config check --shell` output (NAME='VALUE' lines, values
// without quotes inside in these cases).
func shellVars(t *testing.T, out string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			t.Fatalf("config check --shell line %q is not NAME='VALUE'", l)
		}
		vars[k] = v[1 : len(v)-1]
	}
	return vars
}

func TestProcdAgreesWithConfigCheck(t *testing.T) {
	long := "/mnt/" + strings.Repeat("d", 180)
	cases := []struct {
		name, body string
		start      bool // what a volunteer must see; the check has to agree
	}{
		{"mdns Off", "\toption mdns 'Off'\n", true},
		{"mdns NO", "\toption mdns 'NO'\n", true},
		{"mdns False", "\toption mdns 'False'\n", true},
		{"enabled True", "\toption enabled 'True'\n", true},
		{"enabled off", "\toption enabled 'off'\n", false},
		{"option peer", "\toption peer '192.0.2.10:7443#" + testFP + "'\n", true},
		{"option mdns_iface", "\toption mdns_iface '^br-'\n", true},
		{"mem_limit 0", "\toption mem_limit '0'\n", true},
		{"relative store", "\toption store 'qpq/store.db'\n", false},
		{"empty option", "\toption data ''\n", true},
		{"long data path", "\toption data '" + long + "'\n", true},
		// libuci drops what follows the ";": refused, with the line.
		{"semicolon", "\toption domain ffmesh; option max_links 3\n", false},
		{"listen on one address", "\toption listen '[fd00::1]:8443'\n\tlist zone 'mesh'\n", true},
		{"missing main", "", false},
		{"unnamed main", "", false},
	}
	qpq := hostQPQ(t)
	// One root for all cases (setting one up is most of the time), reset between them.
	r := newProcdRoot(t, "")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			config := "config qpq 'main'\n\toption enabled '1'\n" + c.body
			switch c.name {
			case "missing main":
				config = "config qpq 'other'\n\toption enabled '1'\n"
			case "unnamed main":
				config = "config qpq\n\toption enabled '1'\n"
			}
			r.reset(t, config)
			// The real check, on the same file, outside the chroot.
			out, err := exec.Command(qpq, "config", "check", "--shell", r.path("etc/config/qpq")).Output()
			checked := err == nil
			var vars map[string]string
			if checked {
				vars = shellVars(t, string(out))
			}
			s := mustStart(t, r)
			started := len(s.Instances) == 1
			if started != (checked && vars["qpq_enabled"] == "1") {
				t.Fatalf("started %v, but config check passed %v (enabled %q):\n%s\nsyslog:\n%s", started, checked, vars["qpq_enabled"], config, r.syslog(t))
			}
			if started != c.start {
				t.Errorf("started %v, want %v:\n%s\nsyslog:\n%s", started, c.start, config, r.syslog(t))
			}
			log := r.syslog(t)
			if !checked {
				if !strings.Contains(log, "not starting: /etc/config/qpq has problems") || strings.Contains(log, "disabled") {
					t.Errorf("a refused config must be logged as refused, with its problems, not as disabled:\n%s", log)
				}
				if exists(r.path("etc/qpq")) || exists(r.path("qpq")) {
					t.Error("a refused config created a directory")
				}
				return
			}
			if !started {
				return
			}
			in := instance(t, s)
			// The node reads the file itself; the script adds only mDNS devices.
			base := nodeCommand()
			if !slices.Equal(in.Command[:len(base)], base) {
				t.Fatalf("command %q does not start with %q", in.Command, base)
			}
			extra := in.Command[len(base):]
			var want []fwRule
			mdnsRuns := vars["qpq_mdns"] == "1"
			switch {
			case !mdnsRuns || vars["qpq_mdns_iface_set"] == "1":
				if len(extra) != 0 {
					t.Errorf("mdns %s mdns_iface_set %s, yet the script adds %q", vars["qpq_mdns"], vars["qpq_mdns_iface_set"], extra)
				}
			default:
				for i := 0; i < len(extra); i += 2 {
					if extra[i] != "--mdns-iface" || i+1 == len(extra) {
						t.Fatalf("script adds %q, want only --mdns-iface DEV pairs", extra)
					}
				}
				if len(extra) == 0 {
					t.Error("mDNS on, the zones' devices up, yet no --mdns-iface")
				}
			}
			for _, z := range strings.Fields(vars["qpq_zones"]) {
				want = append(want, fwRule{z, vars["qpq_listen_port"], vars["qpq_listen_host"]})
				if mdnsRuns {
					want = append(want, fwRule{z, "5353", ""})
				}
			}
			checkFirewall(t, in.Data.Firewall, want)
			checkNoWan(t, in)
			if len(in.Env) != 0 {
				t.Errorf("env %v: the node applies mem_limit itself", in.Env)
			}
			ownedBy(t, r.dir, strings.TrimPrefix(vars["qpq_data"], "/"), 7443, 7443, 0o700)
			ownedBy(t, r.dir, strings.TrimPrefix(filepath.Dir(vars["qpq_store"]), "/"), 7443, 7443, 0o700)
			ownedBy(t, r.dir, strings.TrimPrefix(filepath.Dir(vars["qpq_control"]), "/"), 7443, 7443, 0o750)
		})
	}
}

// reset puts config in /etc/config/qpq and removes what an earlier start left: the
// recorded calls and log, and the dirs the script creates.
func (r *procdRoot) reset(t *testing.T, config string) {
	t.Helper()
	for _, p := range []string{"tmp/ubus-calls", "tmp/syslog", "etc/qpq", "tmp/qpq", "tmp/run/qpq", "mnt", "qpq"} {
		if err := os.RemoveAll(r.path(p)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, r.dir, "etc/config/qpq", config, 0o600)
}
