package config

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

var fpA = strings.Repeat("a", 52)

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := Bind(fs, "data", "listen", "peer", "control", "log-level", "decoy-rate", "loop-rate", "mix-delay")
	return b.Parse(args, func(k string) string { return env[k] })
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	env := map[string]string{
		"QPQ_DATA":   "/from/env",
		"QPQ_LISTEN": "127.0.0.1:1",
		"QPQ_PEERS":  "192.0.2.1:1#" + fpA + ", 192.0.2.2:2#" + fpA,
	}
	c, err := parse(t, []string{"--listen", "127.0.0.1:2"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2" || c.DataDir != "/from/env" || len(c.Peers) != 2 || c.Peers[1].Addr != "192.0.2.2:2" {
		t.Fatalf("got %+v", c)
	}
	if c.Control != "/from/env/qpq.sock" {
		t.Fatalf("control default %q", c.Control)
	}
	c, err = parse(t, []string{"--peer", "192.0.2.9:9#" + fpA}, env)
	if err != nil || len(c.Peers) != 1 || c.Peers[0].Addr != "192.0.2.9:9" {
		t.Fatalf("a --peer flag must replace QPQ_PEERS: %+v %v", c.Peers, err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.DataDir == "" || c.Domain != "qpq" || len(c.Peers) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestBadValuesNameTheirSource(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--listen", "nope"}, nil, "-listen"},
		{[]string{"--peer", "192.0.2.1:1#short"}, nil, "-peer"},
		{[]string{"--log-level", "loud"}, nil, "-log-level"},
		{[]string{"--bogus"}, nil, "-bogus"},
		{nil, map[string]string{"QPQ_PEERS": "192.0.2.1:1"}, "QPQ_PEERS"},
		{nil, map[string]string{"QPQ_LISTEN": "host"}, "QPQ_LISTEN"},
		{[]string{"--control", "/" + strings.Repeat("x", 120)}, nil, "--control"},
		{nil, map[string]string{"QPQ_DECOY_RATE": "101"}, "QPQ_DECOY_RATE"},
		{nil, map[string]string{"QPQ_DECOY_RATE": "NaN"}, "QPQ_DECOY_RATE"},
		{nil, map[string]string{"QPQ_LOOP_RATE": "-1"}, "QPQ_LOOP_RATE"},
		{nil, map[string]string{"QPQ_MIX_DELAY": "2m"}, "QPQ_MIX_DELAY"},
	}
	for _, c := range cases {
		_, err := parse(t, c.args, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: got %v, want an error naming %s", c.args, c.env, err, c.want)
		}
	}
	_, err := parse(t, nil, map[string]string{"QPQ_LISTEN": "host"})
	var oe *OptionError
	if !errors.As(err, &oe) {
		t.Fatalf("environment error %v is not an *OptionError", err)
	}
}

// The traffic-analysis options read as uci and env give them.
func TestDecoyOptions(t *testing.T) {
	c, err := parse(t, nil, map[string]string{"QPQ_DECOY_RATE": "0.5", "QPQ_LOOP_RATE": "0.1", "QPQ_MIX_DELAY": "500ms"})
	if err != nil {
		t.Fatal(err)
	}
	if c.DecoyRate != 0.5 || c.LoopRate != 0.1 || c.MixDelay != 500*time.Millisecond {
		t.Fatalf("decoy %g, loop %g, mix %v", c.DecoyRate, c.LoopRate, c.MixDelay)
	}
	if d := Default(); d.DecoyRate != 0 || d.LoopRate != 0 || d.MixDelay != 0 {
		t.Fatalf("defaults: decoy %g, loop %g, mix %v; want all off", d.DecoyRate, d.LoopRate, d.MixDelay)
	}
}

func TestValues(t *testing.T) {
	sizes := map[string]int64{"0": 0, "512": 512, "64K": 64 << 10, "48M": 48 << 20, "1G": 1 << 30}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "1T", "x", "99999999999G", "48MiB", "2m", " 4M", "+4M"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	durs := map[string]time.Duration{"7d": 7 * 24 * time.Hour, "90s": 90 * time.Second, "1d12h": 36 * time.Hour, "6h": 6 * time.Hour}
	for in, want := range durs {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1h", "7x", "1d-1h"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestEveryOptionHasUCIName(t *testing.T) {
	for _, o := range Options() {
		if o.UCIName() == "" || strings.Contains(o.UCIName(), "-") || o.Usage == "" {
			t.Errorf("option %+v", o.Name)
		}
	}
}

func FuzzParseValues(f *testing.F) {
	f.Add("48M")
	f.Add("7d12h")
	f.Add("192.0.2.1:7443#" + identity.Fingerprint{}.String())
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
		ParseBool(s)
		for _, o := range Options() {
			c := Default()
			o.Set(&c, s)
		}
	})
}
