package link

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

var testFP = identity.FingerprintOf(ed25519.PublicKey(make([]byte, 32))).String()

func TestParsePeerAddr(t *testing.T) {
	good := []string{"192.0.2.1:7443", "[2001:db8::1]:7443", "[fe80::1%br-mesh]:7443", "node-a.lan:7443", "127.0.0.1:1"}
	for _, a := range good {
		p, err := ParsePeerAddr(a + "#" + testFP)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if p.Addr != a || p.FP.String() != testFP || p.String() != a+"#"+testFP {
			t.Fatalf("%s: parsed %+v", a, p)
		}
	}
	bad := map[string]string{
		"192.0.2.1:7443":                            "want ADDR#FINGERPRINT",
		"192.0.2.1#" + testFP:                       "missing port",
		"192.0.2.1:70000#" + testFP:                 "port",
		"192.0.2.1:-1#" + testFP:                    "port",
		"192.0.2.1:07443#" + testFP:                 "port",
		"bad host!:7443#" + testFP:                  "neither an IP address nor a host name",
		"192.0.2.1:7443#" + testFP[:40]:             "not a fingerprint",
		"192.0.2.1:7443#" + testFP + "#x":           "not a fingerprint",
		"[2001:db8::1:7443#" + testFP:               "missing ']'",
		"2001:db8::1:7443#" + testFP:                "too many colons",
		"192.0.2.1:7443#" + strings.Repeat("!", 52): "not a fingerprint",
	}
	for in, want := range bad {
		_, err := ParsePeerAddr(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

func FuzzParsePeerAddr(f *testing.F) {
	f.Add("192.0.2.1:7443#" + testFP)
	f.Add("[fe80::1%eth0]:7443#" + testFP)
	f.Add("#")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeerAddr(s)
		if err != nil {
			return
		}
		again, err := ParsePeerAddr(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parsed to %+v, which does not re-parse: %v", s, p, err)
		}
	})
}
