package uci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dump renders what libuci reads compactly for comparisons: sections as
// `TYPE NAME@LINE` (NAME "-" when anonymous), each resolved option as
// `o NAME="VALUE"@LINE` or a list as `l NAME=["A"@LINE "B"@LINE]`, all
// joined by " | ".
func dump(f *File) string { return dumpLines(f, true) }

// dumpLines is dump, leaving out the line numbers when lines is false.
func dumpLines(f *File, lines bool) string {
	at := func(n int) string {
		if !lines {
			return ""
		}
		return fmt.Sprintf("@%d", n)
	}
	var parts []string
	for _, s := range f.Sections {
		name := s.Name
		if name == "" {
			name = "-"
		}
		parts = append(parts, fmt.Sprintf("%s %s%s", s.Type, name, at(s.Line)))
		for _, v := range s.Values() {
			if !v.List {
				parts = append(parts, fmt.Sprintf("o %s=%q%s", v.Name, v.Values[0], at(v.Lines[0])))
				continue
			}
			var items []string
			for i, x := range v.Values {
				items = append(items, fmt.Sprintf("%q%s", x, at(v.Lines[i])))
			}
			parts = append(parts, fmt.Sprintf("l %s=[%s]", v.Name, strings.Join(items, " ")))
		}
	}
	return strings.Join(parts, " | ")
}

func formatAll(probs []Problem) []string {
	out := []string{}
	for _, p := range probs {
		out = append(out, p.Format("f"))
	}
	return out
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"blank and comments", "\n  \n# c\n\t# c2\n", ""},
		{"named", "config qpq 'main'\n\toption listen '[::]:7443'\n", `qpq main@1 | o listen="[::]:7443"@2`},
		{"package", "package qpq\n\nconfig qpq main\n", "qpq main@3"},
		{"package quoted", "package 'my-pkg'\nconfig a\n", "a -@2"},
		{"anonymous", "config qpq\noption a 1\nconfig qpq\noption a 2\n", `qpq -@1 | o a="1"@2 | qpq -@3 | o a="2"@4`},
		{"empty name is anonymous", "config qpq ''\n", "qpq -@1"},
		{"bare", "config a b\noption x y\n", `a b@1 | o x="y"@2`},
		{"single quoted", `config a b` + "\n" + `option x 'two words # not a comment \n "q"'`, `a b@1 | o x="two words # not a comment \\n \"q\""@2`},
		{"double quoted escapes as libuci", `config a b` + "\n" + `option x "q\"uote\\back\n\t#;'"`, `a b@1 | o x="q\"uote\\backnt#;'"@2`},
		{"concatenation", `config a b` + "\n" + `option x 'a'"b"c'd e'`, `a b@1 | o x="abcd e"@2`},
		{"bare escapes", `config a b` + "\n" + `option x a\ b\#c\'d`, `a b@1 | o x="a b#c'd"@2`},
		// An empty option sets nothing; an empty list element is kept.
		{"empty value", "config a b\noption x ''\nlist y \"\"\noption z\n", `a b@1 | l y=[""@3]`},
		{"lists", "config a b\nlist x 1\nlist x '2 3'\noption y z\nlist x 4\n", `a b@1 | l x=["1"@2 "2 3"@3 "4"@5] | o y="z"@4`},
		{"option then list", "config a b\noption x 1\nlist x 2\n", `a b@1 | l x=["1"@2 "2"@3]`},
		{"option replaces list in place", "config a b\nlist x 1\noption y 2\noption x 3\n", `a b@1 | o x="3"@4 | o y="2"@3`},
		{"trailing comments", "config a b # c\noption x y # c\nlist l 'v' #c\n", `a b@1 | o x="y"@2 | l l=["v"@3]`},
		{"anonymous then comment", "config a # c\n", "a -@1"},
		{"indentation", "  config\ta\t'b'  \n\t\toption\tx\t\"y\"\t\n", `a b@1 | o x="y"@2`},
		{"crlf", "config a b\r\noption x y\r\noption z 'w'\r\n", `a b@1 | o x="y"@2 | o z="w"@3`},
		{"abbreviated keywords", "p pkg\nc a b\no x 1\nl y 2\n", `a b@2 | o x="1"@3 | l y=["2"@4]`},
		// A ';' after a space or a quote separates statements.
		{"semicolons", "config a 'b'; option x 1 ; list y '2'; option z 3 # c\n", `a b@1 | o x="1"@1 | l y=["2"@1] | o z="3"@1`},
		{"semicolon as the last value", "config a b\noption x ;\n", `a b@1`},
		{"quoted semicolon", "config a b\noption x 'a;b'\n", `a b@1 | o x="a;b"@2`},
		{"continuation", "config a b\noption x \\\nvalue\noption y val\\\nue\n", `a b@1 | o x="value"@2 | o y="value"@4`},
		{"continuation crlf", "config a b\r\noption x val\\\r\nue\r\n", `a b@1 | o x="value"@2`},
		{"continuation in double quotes", "config a b\noption x \"one \\\ntwo\"\noption y z\n", `a b@1 | o x="one two"@2 | o y="z"@4`},
		{"continuation at end of input", "config a b\noption x y\\", `a b@1 | o x="y"@2`},
		{"named section merged", "config a b\noption x 1\nconfig a c\nconfig a b\noption x 2\n", `a b@1 | o x="2"@5 | a c@3`},
		{"type with punctuation", "config wifi-iface w0\n", "wifi-iface w0@1"},
		{"no final newline", "config a b\noption x y", `a b@1 | o x="y"@2`},
		{"utf-8 value", "config a b\noption x 'héllo wörld'\n", `a b@1 | o x="héllo wörld"@2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, probs := Parse(strings.NewReader(tt.in))
			if len(probs) != 0 {
				t.Fatalf("problems: %q", formatAll(probs))
			}
			if got := dump(f); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // Problem.Format("f"); a "misread: " prefix says Problem.Misread
		parsed   string   // dump of what libuci reads (uci -S)
	}{
		{"unknown keyword", "config a b\nopton x y\noption z w\n",
			[]string{`f:2: b: unknown keyword "opton"`}, `a b@1 | o z="w"@3`},
		{"unknown keyword outside", "hello world\n",
			[]string{`f:1: unknown keyword "hello"`}, ``},
		{"quoted keyword", "'config' a\n",
			[]string{`f:1: unknown keyword "'config'"`}, ``},
		{"option outside section", "option x y\nlist l v\nconfig a b\n",
			[]string{`f:1: option before any config section`, `f:2: list before any config section`}, `a b@3`},
		{"missing option name", "config a b\noption\noption ''\nlist\n",
			[]string{`f:2: b: missing option name`, `f:3: b: missing option name`, `f:4: b: missing list name`}, `a b@1`},
		{"invalid option name", "config a b\noption my-opt 1\nlist 'a b' 2\n",
			[]string{`f:2: b: invalid option name "my-opt"`, `f:3: b: invalid list name "a b"`}, `a b@1`},
		// libuci carries a quote over line breaks: the value holds them.
		{"quote over lines", "config a b\noption x 'abc\noption y 'it's'\noption z ok\n",
			[]string{`misread: f:2: b.x: the ' opened here closes on line 3: uci reads the lines between as part of the value (a missing '?)`},
			`a b@1 | o x="abc\noption y its"@2 | o z="ok"@4`},
		{"unterminated double quote", "config a b\noption x \"abc\noption y ok\n",
			[]string{`f:2: b.x: unterminated double quote: the file ends inside it`}, `a b@1`},
		{"unterminated quote in name", "config a 'b\noption x y\n",
			[]string{`f:1: unterminated single quote: the file ends inside it`}, ``},
		{"garbage after value", "config a b\noption x y z\nlist l 'v' w\noption k 'v' ''\n",
			[]string{`f:2: b.x: unexpected "z" after value`, `f:3: b.l: unexpected "w" after value`}, `a b@1 | o x="y"@2 | l l=["v"@3] | o k="v"@4`},
		{"four words", "config a b\noption x y z w\n",
			[]string{`f:2: b.x: unexpected "z" after value`, `f:2: b: unknown keyword "w"`}, `a b@1 | o x="y"@2`},
		{"garbage after section name", "config a b c\noption x y\n",
			[]string{`f:1: unexpected "c" after section name`}, `a b@1 | o x="y"@2`},
		// libuci leaves options after a bad config line in the section before.
		{"invalid section name", "config a ok\nconfig a my-name\noption x y\n",
			[]string{`f:2: ok: invalid section name "my-name"`}, `a ok@1 | o x="y"@3`},
		{"invalid section type", "config 'a b' c\n",
			[]string{`f:1: invalid section type "a b"`}, ``},
		{"missing section type", "config\nconfig ''\nconfig # c\n",
			[]string{`f:1: missing section type`, `f:2: missing section type`, `f:3: missing section type`}, ``},
		{"section redefined with other type", "config a b\noption x 1\nconfig c b\noption x 2\n",
			[]string{`f:3: b: redefined with type "c" (was "a" on line 1)`}, `c b@1 | o x="2"@4`},
		{"anonymous section name in problems", "config a\nconfig a x\nconfig a\noption bad-name 1\n",
			[]string{`f:4: @a[2]: invalid option name "bad-name"`}, `a -@1 | a x@2 | a -@3`},
		{"package problems", "package\npackage 'a b'\npackage a b\n",
			[]string{`f:1: missing package name`, `f:2: invalid package name "a b"`, `f:3: unexpected "b" after package name`}, ``},
		{"semicolon at the end of a line", "config a 'b';\noption x 'y' ; \n",
			[]string{`f:1: b: nothing but the line break after ";": uci refuses this (remove the ";")`, `f:2: b: nothing but the line break after ";": uci refuses this (remove the ";")`}, `a b@1 | o x="y"@2`},
		{"semicolon alone", "config a b\n;\n",
			[]string{`f:2: b: unknown keyword ";"`}, `a b@1`},
		// The case: libuci drops max_links.
		{"semicolon right after a word", "config qpq main\noption domain ffmesh; option max_links 3\n",
			[]string{`misread: f:2: main.domain: "ffmesh;": a ";" right after a word ends the line for uci: it ignores "option max_links 3" (write a space before the ";")`},
			`qpq main@1 | o domain="ffmesh"@2`},
		{"semicolon right after the type", "config a; option x y\n",
			[]string{`misread: f:1: "a;": a ";" right after a word ends the line for uci: it ignores "option x y" (write a space before the ";")`}, `a -@1`},
		{"semicolon at the end of a word is fine", "config a b\noption x y;\noption z w; # c\n", nil, `a b@1 | o x="y"@2 | o z="w"@3`},
		{"hash inside a word", "config a b\noption url http://x/#y\n",
			[]string{`misread: f:2: b.url: "http://x/#y": "#" starts a comment for uci, even inside a word: it reads "http://x/" and ignores the rest of the line (quote the value to keep the "#")`},
			`a b@1 | o url="http://x/"@2`},
		// C's fgets and strlen lose what follows a NUL, newline included.
		{"nul byte", "config a b\noption x 'a\x00b'\noption y z'\noption w v\n",
			[]string{`misread: f:2: b: NUL byte in line: uci ignores the rest of the line`}, `a b@1 | o x="aoption y z"@3 | o w="v"@4`},
		{"every problem reported", "config a b\nopton y z\noption 'q r' s\nlist l 'u\n",
			[]string{`f:2: b: unknown keyword "opton"`, `f:3: b: invalid option name "q r"`, `f:4: b.l: unterminated single quote: the file ends inside it`}, `a b@1`},
		{"long token shortened", "config a b\noption x y " + strings.Repeat("z", 50) + "\n",
			[]string{`f:2: b.x: unexpected "` + strings.Repeat("z", 40) + `"... after value`}, `a b@1 | o x="y"@2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, probs := Parse(strings.NewReader(tt.in))
			got := []string{}
			for _, p := range probs {
				s := p.Format("f")
				if p.Misread {
					s = "misread: " + s
				}
				got = append(got, s)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems\ngot  %q\nwant %q", got, tt.want)
			}
			if d := dump(f); d != tt.parsed {
				t.Errorf("parsed\ngot  %s\nwant %s", d, tt.parsed)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Run("long line", func(t *testing.T) {
		in := "config a b\noption x '" + strings.Repeat("v", MaxLineSize) + "'\noption y z\n"
		f, probs := Parse(strings.NewReader(in))
		want := []string{`f:2: b: line longer than 64 KiB`}
		if got := formatAll(probs); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("got %q, want %q", got, want)
		}
		// libuci reads it all the same: so does Parse, and the node refuses it.
		if v, _ := f.Sections[0].Value("x"); len(v.Values[0]) != MaxLineSize {
			t.Errorf("x is %d bytes", len(v.Values[0]))
		}
		if _, ok := f.Sections[0].Value("y"); !ok {
			t.Errorf("parsed %.100s", dump(f))
		}
	})
	t.Run("long line continued onto", func(t *testing.T) {
		in := "config a b\noption x \"a\\\n" + strings.Repeat("v", MaxLineSize+1) + "\noption y z\n"
		f, probs := Parse(strings.NewReader(in))
		want := []string{`f:2: b.x: unterminated double quote: the file ends inside it`, `f:3: b.x: line longer than 64 KiB`}
		if got := formatAll(probs); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("got %q, want %q", got, want)
		}
		if d := dump(f); d != `a b@1` {
			t.Errorf("parsed %.100s", d)
		}
	})
	t.Run("longest line", func(t *testing.T) {
		v := strings.Repeat("v", MaxLineSize-len("option x ''"))
		f, probs := Parse(strings.NewReader("config a b\noption x '" + v + "'\n"))
		if len(probs) != 0 {
			t.Fatalf("problems %q", formatAll(probs))
		}
		if x, _ := f.Sections[0].Value("x"); x.Values[0] != v {
			t.Errorf("value of %d bytes, want %d", len(x.Values[0]), len(v))
		}
	})
	t.Run("big file", func(t *testing.T) {
		const header = "config a b\n"
		line := "option x '" + strings.Repeat("v", 1000) + "'\n"
		var b strings.Builder
		b.WriteString(header)
		for b.Len() <= MaxFileSize {
			b.WriteString(line)
		}
		b.WriteString("option y z\n")
		kept := (MaxFileSize - len(header)) / len(line)
		if (MaxFileSize-len(header))%len(line) == 0 {
			t.Fatal("the limit falls on a line boundary; change the line length")
		}
		cross := 1 + kept + 1 // the line the limit falls in is the first one ignored
		f, probs := Parse(strings.NewReader(b.String()))
		want := []string{fmt.Sprintf("f:%d: file larger than 1024 KiB; the rest is ignored", cross)}
		if got := formatAll(probs); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("got %q, want %q", got, want)
		}
		if got := len(f.Sections[0].Options); got != kept {
			t.Errorf("%d options kept, want %d", got, kept)
		}
	})
	t.Run("too many problems", func(t *testing.T) {
		in := strings.Repeat("bad\n", 2*MaxProblems)
		_, probs := Parse(strings.NewReader(in))
		if len(probs) != MaxProblems {
			t.Fatalf("%d problems, want %d", len(probs), MaxProblems)
		}
		last := probs[len(probs)-1]
		if last.Msg != "too many problems; stopped checking" || last.Line != MaxProblems {
			t.Errorf("last problem %+v", last)
		}
	})
}

type failingReader struct{ data io.Reader }

func (r failingReader) Read(b []byte) (int, error) {
	n, err := r.data.Read(b)
	if err == io.EOF {
		return n, errors.New("device gone")
	}
	return n, err
}

func TestReadError(t *testing.T) {
	f, probs := Parse(failingReader{strings.NewReader("config a b\noption x y\n")})
	want := []string{"f:3: read error: device gone"}
	if got := formatAll(probs); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
	if d := dump(f); d != `a b@1 | o x="y"@2` {
		t.Errorf("parsed %s", d)
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "qpq")
	if err := os.WriteFile(path, []byte("config qpq 'main'\n\toption listen a b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, probs, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Section("qpq", "main") == nil {
		t.Errorf("no main section: %s", dump(f))
	}
	want := []string{path + `:2: main.listen: unexpected "b" after value`}
	if len(probs) != 1 || probs[0].Format(path) != want[0] {
		t.Errorf("got %q, want %q", formatAll(probs), want)
	}

	missing := filepath.Join(dir, "nope")
	if _, _, err := ParseFile(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := ParseFile(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("directory: %v", err)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{Line: 3, Section: "main", Option: "listen", Msg: "bad port"}, "/etc/config/qpq:3: main.listen: bad port"},
		{Problem{Line: 4, Section: "@qpq[0]", Msg: "oops"}, "/etc/config/qpq:4: @qpq[0]: oops"},
		{Problem{Line: 5, Msg: "file larger than 1024 KiB"}, "/etc/config/qpq:5: file larger than 1024 KiB"},
		{Problem{Line: 6, Option: "x", Msg: "missing value"}, "/etc/config/qpq:6: x: missing value"},
	}
	for _, tt := range tests {
		if got := tt.p.Format("/etc/config/qpq"); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestValues(t *testing.T) {
	in := `
config qpq 'main'
	option listen '[::]:7443'
	option listen '[::]:7444'
	option empty ''
	option level 'debug'
	option level ''
	list peer 'a'
	list peer 'b'
	option single 'x'
	list conv 'first'
	option conv 'reset'
	list conv 'after'
	option conv ''
	list blank ''

config peer
	option addr 'p0'

config peer 'named'
	option addr 'p1'

config peer
	option addr 'p2'
`
	f, probs := Parse(strings.NewReader(in))
	if len(probs) != 0 {
		t.Fatalf("problems %q", formatAll(probs))
	}
	main := f.Section("qpq", "main")
	if main == nil {
		t.Fatal("no main")
	}
	want := []string{
		`listen "[::]:7444" @4`,
		`level "debug" @6`, // an empty option neither sets nor unsets
		`list peer ["a" "b"] @9`,
		`single "x" @10`,
		`list conv ["reset" "after"] @13`, // an option replaces a list in its place, a list after it appends
		`list blank [""] @15`,             // an empty list element is kept
	}
	var got []string
	for _, v := range main.Values() {
		if v.List {
			got = append(got, fmt.Sprintf("list %s [%s] @%d", v.Name, strings.Join(quoteAll(v.Values), " "), v.Line()))
		} else {
			got = append(got, fmt.Sprintf("%s %q @%d", v.Name, v.Values[0], v.Line()))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("values\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, name := range []string{"empty", "nothing"} {
		if v, ok := main.Value(name); ok {
			t.Errorf("Value(%q) = %+v", name, v)
		}
	}
	if f.Section("qpq", "other") != nil || f.Section("peer", "main") != nil {
		t.Error("Section found something absent")
	}
	if v, _ := f.Section("peer", "").Value("addr"); v.Values[0] != "p0" {
		t.Errorf("first anonymous peer has addr %q", v.Values)
	}
	refs := []string{}
	for _, s := range f.Sections {
		refs = append(refs, f.SectionRef(s))
	}
	if got := strings.Join(refs, " "); got != "main @peer[0] named @peer[2]" {
		t.Errorf("refs %s", got)
	}
	if got := f.SectionRef(&Section{Type: "peer"}); got != "" {
		t.Errorf("ref of a foreign section %q", got)
	}
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = fmt.Sprintf("%q", x)
	}
	return out
}

// TestProblemLinesInRange checks a mix of bad inputs never reports a line
// outside the input.
func TestProblemLinesInRange(t *testing.T) {
	for _, in := range []string{"'", "config a\\", "config a \"\\", "option x \"a\\\n", "c a\no x 'a\n\n"} {
		_, probs := Parse(bytes.NewReader([]byte(in)))
		n := lineCount([]byte(in))
		for _, p := range probs {
			if p.Line < 1 || p.Line > n {
				t.Errorf("%q: problem %+v outside lines 1..%d", in, p, n)
			}
		}
	}
}
