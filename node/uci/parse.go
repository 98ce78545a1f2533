package uci

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// Parse reads a uci file and returns what it parsed together with every
// problem found, in line order (at most MaxProblems). A statement with a
// problem is skipped up to the end of its line, and parsing goes on. The
// returned File is never nil. A read error from r is reported as a problem
// at the line where reading stopped.
func Parse(r io.Reader) (*File, []Problem) {
	data, truncated, err := readLimited(r)
	f, probs := parse(data, truncated)
	if err != nil {
		probs = append(probs, Problem{
			Line: bytes.Count(data, []byte{'\n'}) + 1,
			Msg:  "read error: " + err.Error(),
		})
	}
	return f, probs
}

// ParseFile parses the uci file at path. The error is only for failing to
// open or read it (it names the path); problems with the contents are in the
// returned []Problem.
func ParseFile(path string) (*File, []Problem, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err // *fs.PathError, which names the path
	}
	defer fh.Close()
	data, truncated, err := readLimited(fh)
	if err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			err = &fs.PathError{Op: "read", Path: path, Err: err}
		}
		return nil, nil, err
	}
	f, probs := parse(data, truncated)
	return f, probs, nil
}

// readLimited reads r up to one byte more than MaxFileSize; truncated says
// that byte was there.
func readLimited(r io.Reader) (data []byte, truncated bool, err error) {
	data, err = io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	return data, len(data) > MaxFileSize, err
}

func parse(data []byte, truncated bool) (*File, []Problem) {
	tooBig := 0 // line at which the file went over MaxFileSize
	if truncated {
		// Keep the whole lines within the limit.
		data = data[:bytes.LastIndexByte(data[:MaxFileSize], '\n')+1]
		tooBig = bytes.Count(data, []byte{'\n'}) + 1
	}
	p := &parser{
		text:      string(data),
		file:      &File{},
		named:     make(map[string]*Section),
		typeCount: make(map[string]int),
	}
	for p.start < len(p.text) && !p.stopped {
		p.enterLine()
		p.statements()
		p.start = p.end + 1
	}
	if tooBig > 0 && !p.stopped {
		p.report(&Problem{Line: tooBig, Msg: fmt.Sprintf("file larger than %d KiB; the rest is ignored", MaxFileSize>>10)})
	}
	// A line entered by a continuation can be reported before the statement
	// that continued onto it.
	slices.SortStableFunc(p.probs, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
	return p.file, p.probs
}

// eol is what parser.peek returns at the end of the current line.
const eol = -1

// parser holds the state of one Parse. Lines are visited once each, in
// order: the main loop enters a line, and a statement continued with `\`
// enters the next.
type parser struct {
	text       string // the whole input
	start, end int    // the current line is text[start:end]; end is its '\n' or len(text)
	lineNo     int    // the current line's number, from 1
	line       string // the current line, "" when it was rejected
	col        int    // position in line
	semi       bool   // the last statement ended with ';'
	buf        []byte // scratch for building words

	file      *File
	cur       *Section // the section options go to; nil before the first `config`
	curRef    ref      // cur's name for problems
	named     map[string]*Section
	typeCount map[string]int // sections of each type so far
	probs     []Problem
	stopped   bool // MaxProblems reached
}

// ref names a section in problems; it is built into a string only when a
// problem needs it.
type ref struct {
	name  string // the section's name, "" when anonymous
	typ   string // an anonymous section's type, "" for no section
	index int    // an anonymous section's index among sections of its type
}

func (r ref) String() string {
	if r.name != "" || r.typ == "" {
		return r.name
	}
	return anonRef(r.typ, r.index)
}

// enterLine makes the line starting at p.start current, rejecting it (it then
// reads as empty) when it is too long or holds a NUL byte.
func (p *parser) enterLine() {
	p.lineNo++
	p.end = len(p.text)
	if i := strings.IndexByte(p.text[p.start:], '\n'); i >= 0 {
		p.end = p.start + i
	}
	p.line = p.text[p.start:p.end]
	p.col = 0
	switch {
	case len(p.line) > MaxLineSize:
		p.line = ""
		p.report(p.problem(p.lineNo, "", fmt.Sprintf("line longer than %d KiB", MaxLineSize>>10)))
	case strings.IndexByte(p.line, 0) >= 0:
		p.line = ""
		p.report(p.problem(p.lineNo, "", "NUL byte in line"))
	}
}

// continueLine moves to the start of the next line, for a `\` at the end of
// this one. At the end of the input it stays at the end of the line.
func (p *parser) continueLine() {
	if p.end+1 >= len(p.text) {
		p.col = len(p.line)
		return
	}
	p.start = p.end + 1
	p.enterLine()
}

// peek returns the current byte, or eol at the end of the line.
func (p *parser) peek() int {
	if p.col < len(p.line) {
		return int(p.line[p.col])
	}
	return eol
}

func (p *parser) skipSpace() {
	for p.col < len(p.line) && isSpace(p.line[p.col]) {
		p.col++
	}
}

// atBackslashEnd reports whether a `\` just before p.col ends the line (a
// continuation); a CR before the newline is allowed, as libuci does.
func (p *parser) atBackslashEnd() bool {
	rest := p.line[p.col:]
	return rest == "" || rest == "\r"
}

func (p *parser) problem(line int, option, msg string) *Problem {
	return &Problem{Line: line, Section: p.curRef.String(), Option: option, Msg: msg}
}

func (p *parser) report(pr *Problem) {
	if p.stopped {
		return
	}
	if len(p.probs) == MaxProblems-1 {
		p.probs = append(p.probs, Problem{Line: pr.Line, Msg: "too many problems; stopped checking"})
		p.stopped = true
		return
	}
	p.probs = append(p.probs, *pr)
}

// statements parses the statements on the current line (and on lines that
// line is continued onto). After a problem it skips to the end of the line.
func (p *parser) statements() {
	afterSemi := false
	for !p.stopped {
		p.skipSpace()
		switch p.peek() {
		case eol:
			if afterSemi {
				p.report(p.problem(p.lineNo, "", "empty statement after \";\""))
			}
			return
		case '#':
			return
		case ';':
			p.report(p.problem(p.lineNo, "", "empty statement before \";\""))
			return
		}
		p.semi = false
		if pr := p.statement(); pr != nil {
			p.report(pr)
			return
		}
		afterSemi = p.semi
	}
}

// statement parses one statement starting at its keyword.
func (p *parser) statement() *Problem {
	line := p.lineNo
	start := p.col
	for p.col < len(p.line) && !isSpace(p.line[p.col]) {
		p.col++
	}
	switch kw := p.line[start:p.col]; kw {
	case "config", "c":
		return p.config(line)
	case "option", "o":
		return p.option(line, "option")
	case "list", "l":
		return p.option(line, "list")
	case "package", "p":
		return p.pkg(line)
	default:
		return p.problem(line, "", "unknown keyword "+quoteShort(kw))
	}
}

// word is one argument of a statement.
type word struct {
	text    string
	present bool // something was written, if only ''
	line    int  // where it starts
}

// next reads the next argument, as libuci's next_arg and parse_str do: bare
// text, quoted parts and backslash escapes run together until a space; `#`
// starts a comment, even inside bare text; `;` ends the statement, and a
// leading `;` is consumed as an empty argument.
func (p *parser) next() (word, *Problem) {
	p.skipSpace()
	w := word{line: p.lineNo}
	if p.peek() == ';' {
		p.col++
		p.semi = true
		return w, nil
	}
	p.buf = p.buf[:0]
loop:
	for {
		switch c := p.peek(); c {
		case '\'':
			w.present = true
			if pr := p.singleQuoted(); pr != nil {
				return w, pr
			}
		case '"':
			w.present = true
			if pr := p.doubleQuoted(); pr != nil {
				return w, pr
			}
		case '#':
			p.col = len(p.line) // a comment: the rest of the line is ignored
			break loop
		case eol, ';':
			break loop
		case '\\':
			p.col++
			if p.atBackslashEnd() {
				p.continueLine()
				break
			}
			w.present = true
			p.buf = append(p.buf, p.line[p.col])
			p.col++
		default:
			w.present = true
			p.buf = append(p.buf, byte(c))
			p.col++
		}
		if c := p.peek(); c == eol || isSpace(byte(c)) {
			break
		}
	}
	w.text = string(p.buf)
	return w, nil
}

// singleQuoted reads a '...' part: everything up to the next ' on the same
// line, with no escapes.
func (p *parser) singleQuoted() *Problem {
	open := p.lineNo
	p.col++
	i := strings.IndexByte(p.line[p.col:], '\'')
	if i < 0 {
		p.col = len(p.line)
		return p.problem(open, "", "unterminated single quote")
	}
	p.buf = append(p.buf, p.line[p.col:p.col+i]...)
	p.col += i + 1
	return nil
}

// doubleQuoted reads a "..." part. As in libuci a backslash makes the next
// byte literal (so \" is ", \\ is \ and \n is n) and a backslash at the end
// of a line continues the string on the next line.
func (p *parser) doubleQuoted() *Problem {
	open := p.lineNo
	p.col++
	for {
		if p.col >= len(p.line) {
			return p.problem(open, "", "unterminated double quote")
		}
		switch c := p.line[p.col]; c {
		case '"':
			p.col++
			return nil
		case '\\':
			p.col++
			if p.atBackslashEnd() {
				p.continueLine()
				continue
			}
			p.buf = append(p.buf, p.line[p.col])
			p.col++
		default:
			p.buf = append(p.buf, c)
			p.col++
		}
	}
}

// endOfStatement checks that nothing but a comment or `;` follows; after
// names what came last, for the message.
func (p *parser) endOfStatement(after string) *Problem {
	w, pr := p.next()
	if pr != nil {
		return pr
	}
	if w.present {
		return p.problem(w.line, "", fmt.Sprintf("unexpected %s after %s", quoteShort(w.text), after))
	}
	return nil
}

// config parses `config TYPE ['NAME']`.
func (p *parser) config(line int) *Problem {
	// Until this statement proves good, options go to a section that is not
	// in the file, so they are still checked but not kept.
	p.cur, p.curRef = &Section{}, ref{}
	typ, pr := p.next()
	if pr != nil {
		return pr
	}
	if typ.text == "" {
		return p.problem(typ.line, "", "missing section type")
	}
	if !validType(typ.text) {
		return p.problem(typ.line, "", "invalid section type "+quoteShort(typ.text))
	}
	name, pr := p.next()
	if pr != nil {
		return pr
	}
	p.curRef = ref{name: name.text}
	if name.text == "" {
		p.curRef = ref{typ: typ.text, index: p.typeCount[typ.text]}
	} else if !validName(name.text) {
		p.curRef = ref{}
		return p.problem(name.line, "", "invalid section name "+quoteShort(name.text))
	}
	after := "section name"
	if name.text == "" {
		after = "section type"
	}
	if pr := p.endOfStatement(after); pr != nil {
		return pr
	}

	if s, ok := p.named[name.text]; ok {
		if s.Type != typ.text {
			return p.problem(line, "", fmt.Sprintf("redefined with type %s (was %s on line %d)",
				quoteShort(typ.text), quoteShort(s.Type), s.Line))
		}
		p.cur = s
		return nil
	}
	s := &Section{Type: typ.text, Name: name.text, Line: line}
	if s.Name != "" {
		p.named[s.Name] = s
	}
	p.typeCount[s.Type]++
	p.file.Sections = append(p.file.Sections, s)
	p.cur = s
	return nil
}

// option parses `option NAME VALUE` and `list NAME VALUE` (kw says which).
func (p *parser) option(line int, kw string) *Problem {
	name, pr := p.next()
	if pr != nil {
		return pr
	}
	if name.text == "" {
		return p.problem(name.line, "", "missing "+kw+" name")
	}
	if !validName(name.text) {
		return p.problem(name.line, "", "invalid "+kw+" name "+quoteShort(name.text))
	}
	val, pr := p.next()
	if pr == nil && !val.present {
		pr = p.problem(val.line, "", "missing value")
	}
	if pr == nil {
		pr = p.endOfStatement("value")
	}
	if pr != nil {
		pr.Option = name.text
		return pr
	}
	if p.cur == nil {
		return p.problem(line, "", fmt.Sprintf("%s %s before any config section", kw, quoteShort(name.text)))
	}
	p.cur.Options = append(p.cur.Options, Option{Name: name.text, Value: val.text, List: kw == "list", Line: line})
	return nil
}

// pkg parses `package NAME`, which is checked and otherwise ignored, as uci
// does when it loads a single file.
func (p *parser) pkg(line int) *Problem {
	name, pr := p.next()
	if pr != nil {
		return pr
	}
	if name.text == "" {
		return p.problem(line, "", "missing package name")
	}
	if !validPackage(name.text) {
		return p.problem(name.line, "", "invalid package name "+quoteShort(name.text))
	}
	return p.endOfStatement("package name")
}
