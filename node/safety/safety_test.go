package safety

import (
	"crypto/rand"
	"regexp"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

func randFP(t *testing.T) identity.Fingerprint {
	var f identity.Fingerprint
	rand.Read(f[:])
	return f
}

func TestNumberIsTheSameOnBothSides(t *testing.T) {
	for range 50 {
		a, b := randFP(t), randFP(t)
		if Number(a, b) != Number(b, a) || QR(a, b) != QR(b, a) {
			t.Fatalf("Number(a,b) %q != Number(b,a) %q", Number(a, b), Number(b, a))
		}
	}
}

func TestNumberShape(t *testing.T) {
	a, b := randFP(t), randFP(t)
	n := Number(a, b)
	if !regexp.MustCompile(`^[0-9]{5}( [0-9]{5}){11}$`).MatchString(n) {
		t.Fatalf("Number = %q, want 12 groups of 5 digits", n)
	}
	if got := strings.Join(Lines(a, b), " "); got != n {
		t.Fatalf("Lines %q != Number %q", got, n)
	}
	if q := QR(a, b); q != QRPrefix+strings.ReplaceAll(n, " ", "") {
		t.Fatalf("QR %q", q)
	}
}

func TestNumberDependsOnBothFingerprints(t *testing.T) {
	a, b, c := randFP(t), randFP(t), randFP(t)
	if Number(a, b) == Number(a, c) || Number(a, b) == Number(c, b) {
		t.Fatal("changing one fingerprint kept the safety number")
	}
	// One bit flipped changes it too.
	d := b
	d[31] ^= 1
	if Number(a, b) == Number(a, d) {
		t.Fatal("a one-bit change kept the safety number")
	}
}

// TestNumberGolden pins the derivation (label, order, reduction): a change
// would make two versions of qpq disagree.
func TestNumberGolden(t *testing.T) {
	var a, b identity.Fingerprint
	for i := range a {
		a[i], b[i] = byte(i), byte(255-i)
	}
	// Checked against an independent computation (Python hashlib, int mod 10**60).
	const want = "87774 92083 16714 54588 22327 48370 35485 65592 88468 15851 62375 12485"
	if got := Number(a, b); got != want {
		t.Fatalf("Number = %q, want %q", got, want)
	}
}

func TestMatch(t *testing.T) {
	a, b := randFP(t), randFP(t)
	n := Number(a, b)
	for _, typed := range []string{n, strings.ReplaceAll(n, " ", ""), strings.ReplaceAll(n, " ", "-"), QR(b, a), " " + n + "\n"} {
		if !Match(typed, a, b) {
			t.Fatalf("Match(%q) = false", typed)
		}
	}
	wrong := []byte(strings.ReplaceAll(n, " ", ""))
	wrong[0] = '0' + (wrong[0]-'0'+1)%10
	if Match(string(wrong), a, b) || Match("", a, b) || Match(n[:10], a, b) {
		t.Fatal("Match accepted a wrong number")
	}
}
