package cross

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/node/uci"
)

// The differential test of node/uci: crafted and random configs go through
// OpenWrt's real uci (libuci, built by make owtools) and through uci.Parse,
// and what each reads must be the same: the sections (type, name or
// anonymous, in order) and each option's string or list. `uci export` is
// strict, as uci show, uci get and LuCI are: where it refuses a file,
// Parse must report a problem (so the node refuses it too); `uci -S
// export` reads past the errors, line by line, and Parse's reading must
// equal that one always, so what the node runs with is what uci reads.

// uciBin returns the real uci and the environment to run it with. A missing
// tool skips the test, or fails it under CI=true or QPQ_PACKAGE_TESTS=1.
func uciBin(t *testing.T) (bin string, env []string) {
	t.Helper()
	dir := os.Getenv("QPQ_OWTOOLS")
	if dir == "" {
		dir = "build/openwrt-tools" // the Makefile's default
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot, dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(abs, "bin", "uci")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("no uci in %s (run make owtools)", filepath.Dir(bin))
		if os.Getenv("CI") == "true" || os.Getenv("QPQ_PACKAGE_TESTS") == "1" {
			t.Fatalf("%s (CI=true or QPQ_PACKAGE_TESTS=1: a missing tool is a failure)", msg)
		}
		t.Skipf("%s: skipping", msg)
	}
	return bin, append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(abs, "lib"))
}

// readAll runs the real uci on every body at once (one `uci batch` of
// `export` commands, each body a package of its own) and returns what it
// read from each, rendered as render does; a body strict uci refuses is
// missing from the map.
func readAll(t *testing.T, bin string, env []string, bodies [][]byte, strict bool) map[string]string {
	t.Helper()
	dir := t.TempDir()
	var cmds strings.Builder
	for i, body := range bodies {
		name := fmt.Sprintf("c%d", i)
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cmds, "export %s\n", name)
	}
	args := []string{"-c", dir}
	if !strict {
		args = append(args, "-S")
	}
	cmd := exec.Command(bin, append(args, "batch")...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(cmds.String())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("uci batch: %v\n%s", err, errOut.String())
	}
	got, err := renderExport(out.String())
	if err != nil {
		t.Fatalf("reading uci's export: %v\n%s", err, out.String())
	}
	return got
}

// renderExport turns `uci export` output into render's form, by package:
// package NAME, config TYPE ['NAME'], option or list NAME 'VALUE', where a
// quote in a value is written as quote, backslash, quote, quote.
func renderExport(s string) (map[string]string, error) {
	pkgs := map[string]string{}
	var b *strings.Builder
	pkg := ""
	flush := func() {
		if b != nil {
			pkgs[pkg] = b.String()
		}
	}
	for s != "" {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "package "):
			flush()
			pkg, b = line[len("package "):], &strings.Builder{}
		case b == nil:
			return nil, fmt.Errorf("%q before any package", line)
		case strings.HasPrefix(line, "config "):
			rest := line[len("config "):]
			typ, name := rest, "-"
			// The type is written unquoted (a ' in it as '\''), the name quoted.
			if i := strings.LastIndex(rest, " '"); i >= 0 && strings.HasSuffix(rest, "'") && !strings.HasSuffix(rest, `'\''`) {
				typ, name = rest[:i], rest[i+2:len(rest)-1]
			}
			fmt.Fprintf(b, "config %q %q\n", strings.ReplaceAll(typ, `'\''`, "'"), name)
		case strings.HasPrefix(line, "\toption ") || strings.HasPrefix(line, "\tlist "):
			kw, rest, _ := strings.Cut(line[1:], " ")
			name, rest, ok := strings.Cut(rest, " '")
			if !ok {
				return nil, fmt.Errorf("no value in %q", line)
			}
			// The value may run over lines: read up to the closing quote.
			val, tail, err := exportValue(rest + "\n" + s)
			if err != nil {
				return nil, err
			}
			s = tail
			fmt.Fprintf(b, "\t%s %s %q\n", kw[:1], name, val)
		default:
			return nil, fmt.Errorf("unexpected line %q", line)
		}
	}
	flush()
	return pkgs, nil
}

// exportValue reads a value uci_escape wrote (after its opening quote) and
// returns it and what follows its line.
func exportValue(s string) (val, rest string, err error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '\'')
		if i < 0 {
			return "", "", fmt.Errorf("unterminated value")
		}
		b.WriteString(s[:i])
		s = s[i:]
		if strings.HasPrefix(s, `'\''`) {
			b.WriteByte('\'')
			s = s[4:]
			continue
		}
		s = s[1:]
		_, rest, _ = strings.Cut(s, "\n")
		return b.String(), rest, nil
	}
}

// render prints what uci.Parse read in renderExport's form: sections and
// the options as libuci resolved them (an option as `o`, a list as one `l`
// line per element).
func render(f *uci.File) string {
	var b strings.Builder
	for _, s := range f.Sections {
		name := s.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(&b, "config %q %q\n", s.Type, name)
		for _, v := range s.Values() {
			kw := "o"
			if v.List {
				kw = "l"
			}
			for _, x := range v.Values {
				fmt.Fprintf(&b, "\t%s %s %q\n", kw, v.Name, x)
			}
		}
	}
	return b.String()
}

// compare runs every body through the real uci and through uci.Parse and
// reports each difference; names[i] names bodies[i] in messages.
func compare(t *testing.T, names []string, bodies [][]byte) {
	t.Helper()
	bin, env := uciBin(t)
	strict := readAll(t, bin, env, bodies, true)
	lenient := readAll(t, bin, env, bodies, false)
	for i, body := range bodies {
		name, pkg := names[i], fmt.Sprintf("c%d", i)
		f, probs := uci.Parse(bytes.NewReader(body))
		ours := render(f)
		refused := slices.ContainsFunc(probs, func(p uci.Problem) bool { return !p.Misread })
		want, ok := lenient[pkg]
		if !ok {
			t.Errorf("%s: uci -S read nothing from %q", name, body)
			continue
		}
		if want != ours {
			t.Errorf("%s: uci -S reads\n%s\nParse reads\n%s\nfrom %q\nproblems %v", name, want, ours, body, probs)
		}
		_, strictOK := strict[pkg]
		switch {
		case !strictOK && len(probs) == 0:
			t.Errorf("%s: uci refuses the file and Parse reports no problem: %q", name, body)
		case strictOK && refused:
			t.Errorf("%s: uci reads the file and Parse refuses it: %v\n%q", name, probs, body)
		case !strictOK && !refused:
			t.Errorf("%s: uci refuses the file and Parse reports only misreads: %v\n%q", name, probs, body)
		}
	}
}

// uciCases are configs crafted at libuci's edges; the comment says what
// libuci does (measured with the real uci).
var uciCases = map[string]string{
	"empty file":                      "",
	"only package":                    "package qpq\n",
	"package and section":             "package qpq\nconfig qpq 'main'\n\toption a 'b'\n",
	"shipped style":                   "config qpq 'main'\n\toption enabled '1'\n\tlist zone 'lan'\n\toption data '/etc/qpq'\n",
	"semicolon after bare word drops": "config qpq 'main'\n\toption domain ffmesh; option max_links 3\n",
	"semicolon after quote keeps":     "config qpq 'main'\n\toption domain 'ffmesh'; option max_links 3\n",
	"semicolon after space keeps":     "config qpq 'main'\n\toption x \"a;b\" ; option y z\n",
	"semicolon at end of line":        "config qpq 'main'\n\toption x 'a';\n",
	"semicolon as value":              "config qpq 'main'\n\toption x ;\n",
	"bare semicolon end, no newline":  "config qpq 'main'\n\toption x 'a';",
	"semicolon in name":               "config qpq 'main'\n\toption x;y z\n",
	"semicolon after section":         "config qpq main; option a b\n",
	"semicolon after quoted section":  "config qpq 'main'; option a b\n",
	"empty option":                    "config qpq 'main'\n\toption data ''\n",
	"empty list":                      "config qpq 'main'\n\tlist peer ''\n",
	"empty option keeps earlier":      "config qpq 'main'\n\toption a 'x'\n\toption a ''\n",
	"option then list":                "config qpq 'main'\n\toption peer 'a'\n\tlist peer 'b'\n",
	"list then option":                "config qpq 'main'\n\tlist peer 'a'\n\tlist peer 'b'\n\toption peer 'c'\n",
	"replace keeps place":             "config qpq 'main'\n\toption a 1\n\toption b 2\n\toption a 333\n",
	"option without value":            "config qpq 'main'\n\toption a\n",
	"too many arguments":              "config qpq 'main'\n\toption a b c\n",
	"four arguments":                  "config qpq 'main'\n\toption a b c d\n",
	"unterminated single, spans":      "config qpq 'main'\n\toption a 'x\n\toption b 'y'\n",
	"unterminated single at EOF":      "config qpq 'main'\n\toption a 'x\n",
	"unterminated double at EOF":      "config qpq 'main'\n\toption a \"x\n",
	"double quote spans":              "config qpq 'main'\n\toption a \"x\ny\"\n",
	"backslash in bare":               "config qpq 'main'\n\toption a x\\y\\\\z\\n\n",
	"backslash in double":             "config qpq 'main'\n\toption a \"x\\\"y\\n\\\\\"\n",
	"backslash in single":             "config qpq 'main'\n\toption a 'x\\y'\n",
	"continuation bare":               "config qpq 'main'\n\toption a x\\\ny\n",
	"continuation indented":           "config qpq 'main'\n\toption a x\\\n\ty\n",
	"continuation double":             "config qpq 'main'\n\toption a \"x\\\ny\"\n",
	"continuation at EOF":             "config qpq 'main'\n\toption a x\\",
	"hash in word":                    "config qpq 'main'\n\toption a http://x/#y\n\toption b c\n",
	"hash quoted":                     "config qpq 'main'\n\toption a 'x#y'\n",
	"hash after value":                "config qpq 'main' # main\n\toption a b # c\n",
	"hash as value":                   "config qpq 'main'\n\toption a #c\n",
	"hash keyword":                    "config qpq 'main'\n#option a b\n\t#x\n",
	"mixed quotes":                    "config qpq 'main'\n\toption a 'x'\"y\"z\n",
	"duplicate named":                 "config qpq 'main'\n\toption a 1\nconfig qpq 'other'\nconfig qpq 'main'\n\toption b 2\n\toption a 3\n",
	"duplicate named other type":      "config qpq 'main'\n\toption a 1\nconfig other 'main'\n\toption b 2\n",
	"anonymous":                       "config qpq\n\toption a 1\nconfig qpq\n\toption a 2\n",
	"anonymous empty name":            "config qpq ''\n\toption a 1\n",
	"option before section":           "option a b\nconfig qpq 'main'\n",
	"unknown keyword":                 "config qpq 'main'\n\topt a b\n",
	"one letter keywords":             "c qpq 'main'\n\to a b\n\tl c d\n",
	"keyword alone":                   "config\n",
	"keyword alone at EOF":            "config qpq 'main'\n\toption",
	"invalid name":                    "config qpq 'main'\n\toption a-b c\n",
	"invalid section name":            "config qpq 'ma in'\n\toption a b\n",
	"invalid type":                    "config 'q q' 'main'\n",
	"type with punctuation":           "config q.p-q 'main'\n",
	"invalid package":                 "package 'a.b'\n",
	"CRLF":                            "config qpq 'main'\r\n\toption a 'b'\r\n\toption c d\r\n",
	"CRLF continuation":               "config qpq 'main'\r\n\toption a x\\\r\ny\r\n",
	"no trailing newline":             "config qpq 'main'\n\toption a b",
	"tabs and spaces":                 "  config\tqpq\t'main'  \n\t option \t a \t b \t\n",
	"vertical tab":                    "config qpq 'main'\n\toption\va b\n",
	"failed config keeps section":     "config qpq 'main'\nconfig qpq 'b-c'\n\toption a b\n",
	"error then more lines":           "config qpq 'main'\n\toption a-b c\n\toption d e\n",
	"semicolons chain":                "config qpq 'main'; option a 'b'; list c 'd'; list c 'e'\n",
	"empty statement":                 "config qpq 'main'\n;\n",
	"double semicolon":                "config qpq 'main'\n\toption a 'b';;option c d\n",
	"value with spaces":               "config qpq 'main'\n\toption a 'b c'\n",
	"quote in value":                  "config qpq 'main'\n\toption a 'b'\\''c'\n",
	"control character":               "config qpq 'main'\n\toption a 'b\x01c'\n",
	"NUL byte":                        "config a b\noption x 'a\x00b'\noption y z\n",
	"NUL byte, quote closed later":    "config a b\noption x 'a\x00b'\noption y z'\noption w v\n",
	"NUL byte at line start":          "config a b\n\x00option x y\noption w v\n",
}

func TestUCIReadsAsLibuci(t *testing.T) {
	names := slices.Sorted(maps.Keys(uciCases))
	var bodies [][]byte
	for _, name := range names {
		bodies = append(bodies, []byte(uciCases[name]))
	}
	compare(t, names, bodies)
}

// TestUCIRandomConfigsReadAsLibuci runs small random configs, built from
// the pieces libuci's parser treats specially, through both readers.
func TestUCIRandomConfigsReadAsLibuci(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 2))
	var names []string
	var bodies [][]byte
	for i := range 500 {
		names = append(names, fmt.Sprintf("random %d", i))
		bodies = append(bodies, randomConfig(rng))
	}
	compare(t, names, bodies)
}

// randomConfig returns a few lines of statements, mostly well formed,
// with the pieces libuci's parser treats specially mixed in.
func randomConfig(rng *rand.Rand) []byte {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	piece := func() string {
		if rng.IntN(10) < 7 {
			return pick("a", "b1", "x_y", "main", "qpq", "'q v'", "''", "1", "'/etc/qpq'", "'[::]:7443'", "\"on\"")
		}
		return pick("'a;b'", "\"d\\\"q\"", "\"\"", "x\\y", "a#b", "c;", "'s\n", "\"t\n", "\\\n", "\\\n\t",
			"-", "'#'", "é", "'it'\\''s'", "\\;", "'u\r'")
	}
	word := func() string {
		w := piece()
		for rng.IntN(4) == 0 {
			w += piece()
		}
		return w
	}
	sep := func() string {
		if rng.IntN(10) < 7 {
			return pick("\n", " \n", "\n\t")
		}
		return pick("\t", "  ", ";", " ; ", "; ", " # c\n", "\r\n", ";\n", "")
	}
	var b strings.Builder
	if rng.IntN(4) == 0 {
		b.WriteString("package qpq\n")
	}
	if rng.IntN(5) > 0 {
		b.WriteString(pick("config qpq 'main'\n", "config qpq\n", "c qpq main\n"))
	}
	for range 1 + rng.IntN(6) {
		switch n := rng.IntN(10); {
		case n == 0:
			b.WriteString(pick("config", "c") + " " + pick("qpq", "other", word()))
			if rng.IntN(3) > 0 {
				b.WriteString(" " + pick("'main'", "main", "'other'", "''", word()))
			}
		case n < 8:
			b.WriteString(pick("\toption", "\tlist", "o", "l") + " " + pick("a", "b", "peer", "peer", word()))
			if rng.IntN(8) > 0 {
				b.WriteString(" " + word())
			}
			if rng.IntN(8) == 0 {
				b.WriteString(" " + word())
			}
		case n == 8:
			b.WriteString(pick("#", "\t# x", "", "package qpq", "bogus x"))
		default:
			b.WriteString(word())
		}
		b.WriteString(sep())
	}
	if rng.IntN(5) == 0 {
		return []byte(strings.TrimRight(b.String(), "\n"))
	}
	return []byte(b.String())
}
