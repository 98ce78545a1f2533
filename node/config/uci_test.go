package config

import (
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/uci"
)

// fromUCI parses body and returns what FromUCI makes of it, with every
// problem (syntax and value) and warning formatted as `qpq config check`
// prints them, "f" standing for the file.
func fromUCI(t *testing.T, body string) (Config, []string, []string) {
	t.Helper()
	f, probs := uci.Parse(strings.NewReader(body))
	cfg, vprobs := FromUCI(f)
	var ps, ws []string
	for _, p := range append(probs, vprobs...) {
		ps = append(ps, p.Format("f"))
	}
	for _, w := range UCIWarnings(f, cfg) {
		ws = append(ws, w.Format("f"))
	}
	return cfg, ps, ws
}

func mustUCI(t *testing.T, body string) Config {
	t.Helper()
	cfg, probs, _ := fromUCI(t, body)
	if len(probs) != 0 {
		t.Fatalf("problems in\n%s\n%s", body, strings.Join(probs, "\n"))
	}
	return cfg
}

func TestUCIDefaults(t *testing.T) {
	cfg := mustUCI(t, "config qpq 'main'\n")
	if cfg.DataDir != UCIData || cfg.Store != UCIStore || cfg.Control != UCIControl {
		t.Errorf("paths %q %q %q", cfg.DataDir, cfg.Store, cfg.Control)
	}
	if cfg.Enabled || !cfg.MDNS || strings.Join(cfg.Zones, " ") != DefaultZone || cfg.MemLimit != 0 || cfg.Listen != DefaultListen {
		t.Errorf("defaults %+v", cfg)
	}
}

// The node reads the booleans itself with ParseBool, so any case works and
// means what it says (OpenWrt's config_get_bool knew only lowercase).
func TestUCIBooleansAnyCase(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{{"Off", false}, {"NO", false}, {"False", false}, {"disabled", false}, {"0", false},
		{"On", true}, {"YES", true}, {"True", true}, {"Enabled", true}, {"1", true}} {
		cfg := mustUCI(t, "config qpq 'main'\n\toption enabled '"+c.v+"'\n\toption mdns '"+c.v+"'\n")
		if cfg.Enabled != c.want || cfg.MDNS != c.want {
			t.Errorf("%q: enabled %v, mdns %v, want %v", c.v, cfg.Enabled, cfg.MDNS, c.want)
		}
	}
	_, probs, _ := fromUCI(t, "config qpq 'main'\n\toption mdns 'of'\n")
	if len(probs) != 1 || !strings.HasPrefix(probs[0], `f:2: main.mdns: "of": want a boolean`) {
		t.Errorf("problems %q", probs)
	}
}

// A list option written as `option` is a one-element list, honoured; an
// option after a list replaces it, a list after an option extends it.
func TestUCIListOptions(t *testing.T) {
	fp := strings.Repeat("a", 52)
	cfg := mustUCI(t, "config qpq 'main'\n\toption peer '192.0.2.1:7443#"+fp+"'\n\toption mdns_iface '^br-'\n\toption zone 'mesh'\n")
	if len(cfg.Peers) != 1 || cfg.Peers[0].Addr != "192.0.2.1:7443" || len(cfg.MDNSIfaces) != 1 || cfg.MDNSIfaces[0].String() != "^br-" ||
		strings.Join(cfg.Zones, " ") != "mesh" {
		t.Errorf("peers %v ifaces %v zones %v", cfg.Peers, cfg.MDNSIfaces, cfg.Zones)
	}
	cfg = mustUCI(t, "config qpq 'main'\n\toption zone 'a'\n\tlist zone 'b'\n\tlist mdns_iface 'x'\n\toption mdns_iface 'y'\n")
	if strings.Join(cfg.Zones, " ") != "a b" || len(cfg.MDNSIfaces) != 1 || cfg.MDNSIfaces[0].String() != "y" {
		t.Errorf("zones %v ifaces %v", cfg.Zones, cfg.MDNSIfaces)
	}
	_, probs, _ := fromUCI(t, "config qpq 'main'\n\tlist listen '[::]:7443'\n")
	if strings.Join(probs, "\n") != "f:2: main.listen: takes one value: write `option`, not `list`" {
		t.Errorf("problems %q", probs)
	}
}

func TestUCIPathsMustBeAbsolute(t *testing.T) {
	_, probs, _ := fromUCI(t, "config qpq 'main'\n\toption data 'qpq'\n\toption store 'tmp/store.db'\n\toption control './qpq.sock'\n")
	want := []string{
		`f:2: main.data: "qpq": must be an absolute path`,
		`f:3: main.store: "tmp/store.db": must be an absolute path`,
		`f:4: main.control: "./qpq.sock": must be an absolute path`,
	}
	if strings.Join(probs, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(probs, "\n"), strings.Join(want, "\n"))
	}
}

func TestUCIMemLimit(t *testing.T) {
	if cfg := mustUCI(t, "config qpq 'main'\n\toption mem_limit '0'\n"); cfg.MemLimit != 0 {
		t.Errorf("mem_limit 0 = %d, want 0 (no limit)", cfg.MemLimit)
	}
	if cfg := mustUCI(t, "config qpq 'main'\n\toption mem_limit '48M'\n"); cfg.MemLimit != 48<<20 {
		t.Errorf("mem_limit 48M = %d", cfg.MemLimit)
	}
	_, probs, _ := fromUCI(t, "config qpq 'main'\n\toption mem_limit '4M'\n")
	if strings.Join(probs, "\n") != `f:2: main.mem_limit: "4M": below 8M, the node could not run` {
		t.Errorf("problems %q", probs)
	}
}

func TestUCIMainSection(t *testing.T) {
	cases := []struct{ body, want string }{
		{"", "f:1: no config qpq 'main' section: the service cannot start without it"},
		{"package qpq\n", "f:1: no config qpq 'main' section: the service cannot start without it"},
		{"config qpq\n\toption enabled '1'\n",
			"f:1: @qpq[0]: unnamed section: the service reads only the section named main: write config qpq 'main'\n" +
				"f:1: no config qpq 'main' section: the service cannot start without it"},
		{"config qpq 'mian'\n", "f:1: mian: unknown section; settings go in config qpq 'main'\n" +
			"f:1: no config qpq 'main' section: the service cannot start without it"},
	}
	for _, c := range cases {
		_, probs, _ := fromUCI(t, c.body)
		if strings.Join(probs, "\n") != c.want {
			t.Errorf("%q:\n%s\nwant\n%s", c.body, strings.Join(probs, "\n"), c.want)
		}
	}
}

// The socket a uci config uses is UCIControl, so a long data dir is no
// problem; a long control path is, at its line.
func TestUCISocketPathLength(t *testing.T) {
	long := "/mnt/usb/" + strings.Repeat("d", 120)
	cfg := mustUCI(t, "config qpq 'main'\n\toption data '"+long+"'\n")
	if cfg.DataDir != long || cfg.Control != UCIControl {
		t.Errorf("data %q control %q", cfg.DataDir, cfg.Control)
	}
	_, probs, _ := fromUCI(t, "config qpq 'main'\n\toption control '"+long+"/qpq.sock'\n")
	if len(probs) != 1 || !strings.HasPrefix(probs[0], "f:2: main.control: ") || !strings.Contains(probs[0], "unix sockets allow 107") {
		t.Errorf("problems %q", probs)
	}
}

// An empty value is what uci reads it as, absent: a warning, never a
// refusal.
func TestUCIEmptyValuesWarn(t *testing.T) {
	cfg, probs, warns := fromUCI(t, "config qpq 'main'\n\toption data ''\n\tlist peer ''\n\toption mdns\n")
	if len(probs) != 0 {
		t.Fatalf("problems %q", probs)
	}
	if cfg.DataDir != UCIData || len(cfg.Peers) != 0 || !cfg.MDNS {
		t.Errorf("config %+v", cfg)
	}
	want := []string{
		"f:2: main.data: warning: empty value: uci reads an empty option as absent, so the default applies (delete the line or give a value)",
		"f:3: main.peer: warning: empty list element: uci leaves it out (delete the line or give a value)",
		"f:4: main.mdns: warning: empty value: uci reads an empty option as absent, so the default applies (delete the line or give a value)",
	}
	if strings.Join(warns, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings\n%s\nwant\n%s", strings.Join(warns, "\n"), strings.Join(want, "\n"))
	}
}

// libuci drops what follows a ';' right after a word: so does the node, and
// the check says so at the line.
func TestUCISemicolonDropIsReported(t *testing.T) {
	cfg, probs, _ := fromUCI(t, "config qpq 'main'\n\toption domain ffmesh; option max_links 3\n")
	want := `f:2: main.domain: "ffmesh;": a ";" right after a word ends the line for uci: it ignores "option max_links 3" (write a space before the ";")`
	if strings.Join(probs, "\n") != want {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(probs, "\n"), want)
	}
	if cfg.Domain != "ffmesh" || cfg.MaxLinks != DefaultMaxLinks {
		t.Errorf("domain %q max_links %d: not what libuci reads", cfg.Domain, cfg.MaxLinks)
	}
	cfg = mustUCI(t, "config qpq 'main'\n\toption domain 'ffmesh' ; option max_links 3\n")
	if cfg.Domain != "ffmesh" || cfg.MaxLinks != 3 {
		t.Errorf("domain %q max_links %d", cfg.Domain, cfg.MaxLinks)
	}
}

func TestUCIBridgeSection(t *testing.T) {
	fp := identity.Fingerprint{1, 2, 3}.String()
	ch := strings.Repeat("0f", 32)
	cfg := mustUCI(t, "config qpq 'main'\n\toption listen '127.0.0.1:7443'\n"+
		"config bridge 'bridge'\n\toption island 'nord'\n\toption secret 'sixteen-chars-ok'\n"+
		"\tlist listen '/ip4/127.0.0.1/udp/7444/quic-v1'\n\tlist peer '/ip4/192.0.2.7/udp/7444/quic-v1/p2p/12D3KooWabc'\n"+
		"\tlist allow '"+fp+"'\n\tlist channel '"+ch+"'\n\toption rate '10'\n")
	b := cfg.Bridge
	if cfg.Listen != "127.0.0.1:7443" || b.Island != "nord" || b.Secret != "sixteen-chars-ok" || b.Rate != 10 {
		t.Fatalf("listen %q bridge %+v", cfg.Listen, b)
	}
	if len(b.Listen) != 1 || b.Listen[0] != "/ip4/127.0.0.1/udp/7444/quic-v1" || len(b.Peers) != 1 || len(b.Allow) != 1 || len(b.Channels) != 1 || b.Channels[0][0] != 0x0f {
		t.Fatalf("bridge lists %+v", b)
	}
	if err := cfg.CheckBridge(); err != nil {
		t.Fatalf("complete bridge section refused: %v", err)
	}
	if err := mustUCI(t, "config qpq 'main'\n").CheckBridge(); err == nil || !strings.Contains(err.Error(), "--bridge-island") || !strings.Contains(err.Error(), "--bridge-allow") {
		t.Fatalf("missing bridge settings: %v", err)
	}
	for body, want := range map[string]string{
		"config bridge 'bridge'\n\toption secret 'short'\n":            `f:3: bridge.secret: "short": 5 characters, want at least 16`,
		"config bridge 'bridge'\n\tlist peer '/ip4/192.0.2.7/udp/1'\n": "want the bridge's peer id at the end",
		"config bridge 'bridge'\n\toption channel 'zz'\n":              "want a channel id: 64 hex digits",
		"config bridge 'bridge'\n\toption island 'Nord'\n":             "want 1-32 of a-z, 0-9 and -",
		"config bridge 'bridge'\n\toption decoy_rate '1'\n":            "bridge.decoy_rate: unknown option",
		"config bridge 'other'\n":                                      "the bridge's settings go in one section",
	} {
		_, probs, _ := fromUCI(t, "config qpq 'main'\n"+body)
		if !strings.Contains(strings.Join(probs, "\n"), want) {
			t.Errorf("%q: problems %q, want %q", body, probs, want)
		}
	}
}
