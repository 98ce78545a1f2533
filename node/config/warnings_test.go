package config

import (
	"strings"
	"testing"

	"github.com/quicproquo/qpq/node/uci"
)

// uciBools is every spelling uci's config_get_bool takes.
var uciBools = map[string]bool{
	"1": true, "yes": true, "on": true, "true": true, "enabled": true,
	"0": false, "no": false, "off": false, "false": false, "disabled": false,
}

func TestBoolErrorNamesExactlyWhatIsAccepted(t *testing.T) {
	for w, want := range uciBools {
		for _, s := range []string{w, strings.ToUpper(w)} {
			if got, err := ParseBool(s); err != nil || got != want {
				t.Errorf("ParseBool(%q) = %v, %v; want %v", s, got, err, want)
			}
		}
	}
	_, err := ParseBool("maybe")
	if err == nil {
		t.Fatal("maybe accepted")
	}
	for w := range uciBools {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q, which is accepted", err, w)
		}
	}
	// As `qpq config check` shows it.
	f, _ := uci.Parse(strings.NewReader("config qpq 'main'\n\toption mdns 'maybe'\n"))
	_, probs := FromUCI(f)
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "yes/on/true/enabled") || strings.Contains(probs[0].Msg, "0 or 1") {
		t.Fatalf("problems: %+v", probs)
	}
}

func TestStoreShareBelowTheLargestMessageWarns(t *testing.T) {
	for _, c := range []struct {
		max  int64
		warn bool
	}{
		{64 << 10, true}, {256 << 10, true}, {int64(LargestStoredMessage)*16 - 1, true},
		{int64(LargestStoredMessage) * 16, false}, {DefaultStoreMaxBytes, false},
	} {
		cfg := Default()
		cfg.StoreMaxBytes = c.max
		ws := cfg.Warnings()
		if got := len(ws) == 1 && ws[0].Option == "store-max-bytes"; got != c.warn {
			t.Errorf("store of %d bytes: warnings %+v, want a store-max-bytes warning: %v", c.max, ws, c.warn)
		}
	}
	// The share the warning assumes is the one the node gives its store.
	if PerSourceShare(16<<20) != 1<<20 {
		t.Fatalf("per-source share of 16M is %d", PerSourceShare(16<<20))
	}

	f, _ := uci.Parse(strings.NewReader("config qpq 'main'\n\toption listen '[::]:7443'\n\toption store_max_bytes '128K'\n"))
	cfg, probs := FromUCI(f)
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	ws := UCIWarnings(f, cfg)
	if len(ws) != 1 {
		t.Fatalf("uci warnings: %+v", ws)
	}
	got := ws[0].Format("/etc/config/qpq")
	want := "/etc/config/qpq:3: main.store_max_bytes: warning: 128K gives each source a share of 8K, less than the largest sealed message (21531 bytes)"
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "set at least 337K") {
		t.Fatalf("got  %s\nwant %s...set at least 337K", got, want)
	}
}
