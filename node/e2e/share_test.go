package e2e

import (
	"errors"
	"strings"
	"testing"
)

func TestShareRoundTrip(t *testing.T) {
	for _, name := range []string{"a", "general", "Café au lait ☕", "with space", strings.Repeat("é", 64), "x-y_z.1"} {
		key := NewChannelKey()
		s, err := FormatShare(name, key)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if !strings.HasPrefix(s, "qpqch1:"+name+":") {
			t.Fatalf("share %q", s)
		}
		gotName, gotKey, err := ParseShare(s)
		if err != nil || gotName != name || gotKey != key {
			t.Fatalf("%q: got %q, %v", s, gotName, err)
		}
		// Pasted with surrounding whitespace, or upper-cased by a reader.
		upper := "QPQCH1:" + name + ":" + strings.ToUpper(s[len("qpqch1:")+len(name)+1:])
		for _, v := range []string{"  " + s + "\n", upper} {
			if n, k, err := ParseShare(v); err != nil || n != name || k != key {
				t.Fatalf("%q: %v", v, err)
			}
		}
	}
}

func TestShareFormat(t *testing.T) {
	s, err := FormatShare("general", ChannelKey{})
	if err != nil {
		t.Fatal(err)
	}
	// Pinned: the share format is versioned and must not drift.
	const want = "qpqch1:general:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:"
	if !strings.HasPrefix(s, want) || len(s) != len(want)+8 {
		t.Fatalf("got %q", s)
	}
	t.Logf("example share: %s", s)
}

func TestShareNames(t *testing.T) {
	for _, name := range []string{"", "a:b", strings.Repeat("x", 65), "tab\there", "nl\n", " lead", "trail ", "\xff", "zw\u200bj", "rtl\u202e"} {
		if _, err := FormatShare(name, ChannelKey{}); !errors.Is(err, ErrBadShare) {
			t.Errorf("name %q accepted: %v", name, err)
		}
	}
}

func TestParseShareRejects(t *testing.T) {
	good, _ := FormatShare("general", ChannelKey{1, 2, 3})
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, s := range []string{
		"",
		"qpqch1:",
		"qpqch2:general:aaaa:bbbb",
		"hello",
		good[:len(good)-1],
		good + "a",
		good + ":extra",
		strings.Replace(good, "general", "General", 1),
		flip(len("qpqch1:general:") + 3),
		flip(len(good) - 2),
		strings.Replace(good, "qpqch1:general:", "qpqch1:gen:eral:", 1),
		strings.Replace(good, "qpqch1:general:", "qpqch1::", 1),
		"qpqch1:general:" + strings.Repeat("9", 52) + ":aaaaaaaa",
		"qpqch1:general:" + strings.Repeat("a", 51) + "b:aaaaaaaa", // non-canonical final character
		"qpqch1:" + strings.Repeat("x", 2000),
	} {
		if _, _, err := ParseShare(s); !errors.Is(err, ErrBadShare) {
			t.Errorf("%q accepted: %v", s, err)
		}
	}
}
