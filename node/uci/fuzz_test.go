package uci

import (
	"bytes"
	"strings"
	"testing"
)

// lineCount is how many lines data has: a last line without a newline counts.
func lineCount(data []byte) int {
	n := bytes.Count(data, []byte{'\n'})
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return n
}

// FuzzParse checks that Parse never panics, that every line it reports is in
// the input, and that what it parsed, written back out, reads the same.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		realistic,
		"config a b\noption x 'a'\"b\"c\\ d\nlist l v # c\n",
		"c a; o x y; l z w\n",
		"config a\noption x \"a\\\nb\"\noption y 'u\n",
		"option x y\nconfig 'a b' c\nconfig a b c\npackage -\n",
		"config a b\r\noption x \\\r\nv\r\n",
		"config a b;\n;\n\x00\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, probs := Parse(bytes.NewReader(data))
		n := lineCount(data)
		for _, p := range probs {
			if p.Line < 1 || p.Line > n {
				t.Fatalf("problem %+v outside lines 1..%d", p, n)
			}
			if p.Msg == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
		prev := 0
		for _, s := range file.Sections {
			if s.Line < 1 || s.Line > n || !validType(s.Type) || s.Name != "" && !validName(s.Name) {
				t.Fatalf("bad section %+v (lines 1..%d)", s, n)
			}
			if s.Line < prev { // two sections may share a line (c a; c b)
				t.Fatalf("section %+v out of order", s)
			}
			prev = s.Line
			for _, o := range s.Options {
				if o.Line < 1 || o.Line > n || !validName(o.Name) {
					t.Fatalf("bad option %+v (lines 1..%d)", o, n)
				}
				if strings.ContainsRune(o.Value, 0) {
					t.Fatalf("option %+v holds a NUL", o)
				}
			}
		}

		out := exportText(file)
		for _, l := range strings.Split(out, "\n") {
			if len(l) > MaxLineSize {
				return // values joined by continuations can outgrow a line
			}
		}
		again, probs := Parse(strings.NewReader(out))
		for _, p := range probs {
			// A value holding a line break is exported as a quote over
			// lines, which is reported, and reads back the same.
			if !p.Misread {
				t.Fatalf("exported text has problems %q:\n%s", formatAll(probs), out)
			}
		}
		if a, b := dumpLines(file, false), dumpLines(again, false); a != b {
			t.Fatalf("round trip differs:\n%s\n%s", a, b)
		}
	})
}
