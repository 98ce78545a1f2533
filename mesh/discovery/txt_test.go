package discovery

import (
	"errors"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

func testFP(b byte) identity.Fingerprint {
	var fp identity.Fingerprint
	for i := range fp {
		fp[i] = b + byte(i)
	}
	return fp
}

func TestTXTRoundTrip(t *testing.T) {
	fp := testFP(7)
	txt, err := buildTXT(fp, "qpq")
	if err != nil {
		t.Fatal(err)
	}
	if n := txtLen(txt); n >= maxTXTLen {
		t.Fatalf("TXT is %d bytes", n)
	}
	got, domain, err := parseTXT(txt)
	if err != nil {
		t.Fatal(err)
	}
	if got != fp || domain != "qpq" {
		t.Fatalf("got %v %q", got, domain)
	}
	// Key case and extra keys do not matter; order does not either.
	got, _, err = parseTXT([]string{"future=x", "DOMAIN=qpq", "ID=" + fp.String(), "TxtVers=1", "flag"})
	if err != nil || got != fp {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestParseTXTRejects(t *testing.T) {
	id := "id=" + testFP(1).String()
	cases := []struct {
		name string
		txt  []string
		want error
	}{
		{"empty", nil, errTXTVersion},
		{"no version", []string{id, "domain=qpq"}, errTXTVersion},
		{"version 2", []string{"txtvers=2", id, "domain=qpq"}, errTXTVersion},
		{"no id", []string{"txtvers=1", "domain=qpq"}, errTXTID},
		{"short id", []string{"txtvers=1", "id=abc", "domain=qpq"}, errTXTID},
		{"bad id", []string{"txtvers=1", "id=" + strings.Repeat("1", 52), "domain=qpq"}, errTXTID},
		{"zero id", []string{"txtvers=1", "id=" + identity.Fingerprint{}.String(), "domain=qpq"}, errTXTID},
		{"no domain", []string{"txtvers=1", id}, errTXTDomain},
		{"empty domain", []string{"txtvers=1", id, "domain="}, errTXTDomain},
		{"space domain", []string{"txtvers=1", id, "domain=a b"}, errTXTDomain},
		{"two ids", []string{"txtvers=1", id, id, "domain=qpq"}, errTXTDuplicate},
		{"oversize", []string{"txtvers=1", id, "domain=qpq", "pad=" + strings.Repeat("x", 150)}, errTXTTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := parseTXT(c.txt)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestBuildTXTRejects(t *testing.T) {
	if _, err := buildTXT(identity.Fingerprint{}, "qpq"); !errors.Is(err, errTXTID) {
		t.Errorf("zero fp: %v", err)
	}
	if _, err := buildTXT(testFP(1), strings.Repeat("d", maxDomainLen+1)); !errors.Is(err, errTXTDomain) {
		t.Errorf("long domain: %v", err)
	}
	if _, err := buildTXT(testFP(1), strings.Repeat("d", maxDomainLen)); err != nil {
		t.Errorf("longest domain: %v", err)
	}
}

// TestOtherDomain checks that a node of another mesh domain parses but is
// filtered by the domain comparison in report.
func TestOtherDomain(t *testing.T) {
	txt, _ := buildTXT(testFP(2), "other")
	_, domain, err := parseTXT(txt)
	if err != nil || domain != "other" {
		t.Fatalf("%q %v", domain, err)
	}
}

func FuzzParseTXT(f *testing.F) {
	txt, _ := buildTXT(testFP(3), "qpq")
	f.Add(strings.Join(txt, "\x00"))
	f.Add("txtvers=1\x00id=\x00domain=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		fields := strings.Split(s, "\x00")
		fp, domain, err := parseTXT(fields)
		if err != nil {
			return
		}
		again, err := buildTXT(fp, domain)
		if err != nil {
			t.Fatalf("parsed %v %q but cannot rebuild: %v", fp, domain, err)
		}
		fp2, d2, err := parseTXT(again)
		if err != nil || fp2 != fp || d2 != domain {
			t.Fatalf("round trip: %v %q %v", fp2, d2, err)
		}
	})
}
