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

// dump renders f compactly for comparisons: sections as `TYPE NAME@LINE`
// (NAME "-" when anonymous), each option as `o NAME=VALUE@LINE` or
// `l NAME=VALUE@LINE` with the value quoted, all joined by " | ".
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
		for _, o := range s.Options {
			kw := "o"
			if o.List {
				kw = "l"
			}
			parts = append(parts, fmt.Sprintf("%s %s=%q%s", kw, o.Name, o.Value, at(o.Line)))
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
		{"empty value", "config a b\noption x ''\nlist y \"\"\n", `a b@1 | o x=""@2 | l y=""@3`},
		{"lists", "config a b\nlist x 1\nlist x '2 3'\noption y z\nlist x 4\n", `a b@1 | l x="1"@2 | l x="2 3"@3 | o y="z"@4 | l x="4"@5`},
		{"trailing comments", "config a b # c\noption x y # c\nlist l 'v'#c\noption z w#c\n", `a b@1 | o x="y"@2 | l l="v"@3 | o z="w"@4`},
		{"anonymous then comment", "config a # c\n", "a -@1"},
		{"indentation", "  config\ta\t'b'  \n\t\toption\tx\t\"y\"\t\n", `a b@1 | o x="y"@2`},
		{"crlf", "config a b\r\noption x y\r\noption z 'w'\r\n", `a b@1 | o x="y"@2 | o z="w"@3`},
		{"abbreviated keywords", "p pkg\nc a b\no x 1\nl y 2\n", `a b@2 | o x="1"@3 | l y="2"@4`},
		{"semicolons", "config a b; option x 1; list y 2\noption z 3; # c\n", `a b@1 | o x="1"@1 | l y="2"@1 | o z="3"@2`},
		{"quoted semicolon", "config a b\noption x 'a;b'\n", `a b@1 | o x="a;b"@2`},
		{"continuation", "config a b\noption x \\\nvalue\noption y val\\\nue\n", `a b@1 | o x="value"@2 | o y="value"@4`},
		{"continuation crlf", "config a b\r\noption x val\\\r\nue\r\n", `a b@1 | o x="value"@2`},
		{"continuation in double quotes", "config a b\noption x \"one \\\ntwo\"\noption y z\n", `a b@1 | o x="one two"@2 | o y="z"@4`},
		{"continuation at end of input", "config a b\noption x y\\", `a b@1 | o x="y"@2`},
		{"named section merged", "config a b\noption x 1\nconfig a c\nconfig a b\noption x 2\n", `a b@1 | o x="1"@2 | o x="2"@5 | a c@3`},
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
		want     []string // Problem.Format("f")
		parsed   string   // dump of what still parsed
	}{
		{"unknown keyword", "config a b\nopton x y\noption z w\n",
			[]string{`f:2: b: unknown keyword "opton"`}, `a b@1 | o z="w"@3`},
		{"unknown keyword outside", "hello world\n",
			[]string{`f:1: unknown keyword "hello"`}, ``},
		{"quoted keyword", "'config' a\n",
			[]string{`f:1: unknown keyword "'config'"`}, ``},
		{"option outside section", "option x y\nlist l v\nconfig a b\n",
			[]string{`f:1: option "x" before any config section`, `f:2: list "l" before any config section`}, `a b@3`},
		{"missing value", "config a b\noption x\nlist y   # c\noption z ;\n",
			[]string{`f:2: b.x: missing value`, `f:3: b.y: missing value`, `f:4: b.z: missing value`}, `a b@1`},
		{"missing option name", "config a b\noption\noption ''\nlist\n",
			[]string{`f:2: b: missing option name`, `f:3: b: missing option name`, `f:4: b: missing list name`}, `a b@1`},
		{"invalid option name", "config a b\noption my-opt 1\nlist 'a b' 2\n",
			[]string{`f:2: b: invalid option name "my-opt"`, `f:3: b: invalid list name "a b"`}, `a b@1`},
		{"unterminated single quote", "config a b\noption x 'abc\noption y 'it's'\noption z ok\n",
			[]string{`f:2: b.x: unterminated single quote`, `f:3: b.y: unterminated single quote`}, `a b@1 | o z="ok"@4`},
		{"unterminated double quote", "config a b\noption x \"abc\noption y ok\n",
			[]string{`f:2: b.x: unterminated double quote`}, `a b@1 | o y="ok"@3`},
		{"unterminated quote continued", "config a b\noption x \"abc\\\ndef\noption y ok\n",
			[]string{`f:2: b.x: unterminated double quote`}, `a b@1 | o y="ok"@4`},
		{"unterminated quote in name", "config a 'b\noption x y\n",
			[]string{`f:1: unterminated single quote`}, ``},
		{"garbage after value", "config a b\noption x y z\nlist l 'v' w\noption k 'v' ''\n",
			[]string{`f:2: b.x: unexpected "z" after value`, `f:3: b.l: unexpected "w" after value`, `f:4: b.k: unexpected "" after value`}, `a b@1`},
		{"garbage after section name", "config a b c\noption x y\n",
			[]string{`f:1: b: unexpected "c" after section name`}, ``},
		{"invalid section name", "config a my-name\noption x y\nconfig a ok\n",
			[]string{`f:1: invalid section name "my-name"`}, `a ok@3`},
		{"invalid section type", "config 'a b' c\n",
			[]string{`f:1: invalid section type "a b"`}, ``},
		{"missing section type", "config\nconfig ''\nconfig # c\n",
			[]string{`f:1: missing section type`, `f:2: missing section type`, `f:3: missing section type`}, ``},
		{"section redefined with other type", "config a b\noption x 1\nconfig c b\noption x 2\n",
			[]string{`f:3: b: redefined with type "c" (was "a" on line 1)`}, `a b@1 | o x="1"@2`},
		{"anonymous section name in problems", "config a\nconfig a x\nconfig a\noption bad\n",
			[]string{`f:4: @a[2].bad: missing value`}, `a -@1 | a x@2 | a -@3`},
		{"options after bad config are checked, not kept", "config a my-name\noption x\n",
			[]string{`f:1: invalid section name "my-name"`, `f:2: x: missing value`}, ``},
		{"package problems", "package\npackage 'a b'\npackage a b\n",
			[]string{`f:1: missing package name`, `f:2: invalid package name "a b"`, `f:3: unexpected "b" after package name`}, ``},
		{"empty statements", "config a b; \n;\noption x y;;\n",
			[]string{`f:1: b: empty statement after ";"`, `f:2: b: empty statement before ";"`, `f:3: b: empty statement before ";"`}, `a b@1 | o x="y"@3`},
		{"semicolon after type", "config a; option x y\n",
			[]string{`f:1: @a[0]: unexpected "option" after section type`}, ``},
		{"nul byte", "config a b\noption x 'a\x00b'\noption y z\n",
			[]string{`f:2: b: NUL byte in line`}, `a b@1 | o y="z"@3`},
		{"every problem reported", "config a b\noption x\nopton y z\noption 'q r' s\nlist l 'u\n",
			[]string{`f:2: b.x: missing value`, `f:3: b: unknown keyword "opton"`, `f:4: b: invalid option name "q r"`, `f:5: b.l: unterminated single quote`}, `a b@1`},
		{"long token shortened", "config a b\noption x y " + strings.Repeat("z", 50) + "\n",
			[]string{`f:2: b.x: unexpected "` + strings.Repeat("z", 40) + `"... after value`}, `a b@1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, probs := Parse(strings.NewReader(tt.in))
			got := formatAll(probs)
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
		if d := dump(f); d != `a b@1 | o y="z"@3` {
			t.Errorf("parsed %s", d)
		}
	})
	t.Run("long line continued onto", func(t *testing.T) {
		in := "config a b\noption x \"a\\\n" + strings.Repeat("v", MaxLineSize+1) + "\noption y z\n"
		f, probs := Parse(strings.NewReader(in))
		want := []string{`f:2: b.x: unterminated double quote`, `f:3: b: line longer than 64 KiB`}
		if got := formatAll(probs); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("got %q, want %q", got, want)
		}
		if d := dump(f); d != `a b@1 | o y="z"@4` {
			t.Errorf("parsed %s", d)
		}
	})
	t.Run("longest line", func(t *testing.T) {
		v := strings.Repeat("v", MaxLineSize-len("option x ''"))
		f, probs := Parse(strings.NewReader("config a b\noption x '" + v + "'\n"))
		if len(probs) != 0 {
			t.Fatalf("problems %q", formatAll(probs))
		}
		if o, _ := f.Sections[0].Get("x"); o.Value != v {
			t.Errorf("value of %d bytes, want %d", len(o.Value), len(v))
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
	if err := os.WriteFile(path, []byte("config qpq 'main'\n\toption listen\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, probs, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Section("qpq", "main") == nil {
		t.Errorf("no main section: %s", dump(f))
	}
	want := []string{path + ":2: main.listen: missing value"}
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

func TestAccessors(t *testing.T) {
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
	if o, ok := main.Get("listen"); !ok || o.Value != "[::]:7444" || o.Line != 4 {
		t.Errorf("listen = %+v, %v", o, ok)
	}
	if o, ok := main.Get("level"); !ok || o.Value != "debug" {
		t.Errorf("level = %+v, %v (an empty option must not unset it)", o, ok)
	}
	for _, name := range []string{"empty", "peer", "nothing"} {
		if o, ok := main.Get(name); ok {
			t.Errorf("Get(%q) = %+v", name, o)
		}
	}
	lists := map[string][]string{
		"peer":    {"a", "b"},
		"single":  {"x"},
		"conv":    {"reset", "after"},
		"empty":   nil,
		"nothing": nil,
	}
	for name, want := range lists {
		if got := main.List(name); fmt.Sprint(got) != fmt.Sprint(want) || (want == nil) != (got == nil) {
			t.Errorf("List(%q) = %q, want %q", name, got, want)
		}
	}
	if f.Section("qpq", "other") != nil || f.Section("peer", "main") != nil {
		t.Error("Section found something absent")
	}
	anon := f.Section("peer", "")
	if o, _ := anon.Get("addr"); o.Value != "p0" {
		t.Errorf("first anonymous peer has addr %q", o.Value)
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
