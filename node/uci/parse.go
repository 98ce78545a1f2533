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

// Parse reads a uci file and returns what libuci reads from it together
// with every problem found, in line order (at most MaxProblems). The
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
	p := &parser{in: data, file: &File{}, named: map[string]*Section{}}
	p.run()
	if tooBig > 0 && !p.stopped {
		p.report(Problem{Line: tooBig, Msg: fmt.Sprintf("file larger than %d KiB; the rest is ignored", MaxFileSize>>10)})
	}
	slices.SortStableFunc(p.probs, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
	return p.file, p.probs
}

// parser is libuci's file parser (uci/file.c: uci_import, uci_parse_line,
// next_arg, parse_str and the quote and backslash helpers), followed step
// by step on a byte buffer that, as in C, holds the current line (and the
// lines a quote or a `\` pulled in) with a 0 byte at its end, and is
// rewritten in place as words are read. Following libuci this closely is
// what makes its quirks ours: a `;` right after a bare word overwrites
// itself with the word's terminating 0 and so ends the line; `#` ends a
// word anywhere; a quote runs on over line breaks.
//
// It reads as `uci -S` (not strict) does: a problem abandons the rest of
// its line and the next line is read, so one run finds every problem. What
// strict libuci (uci show, uci get, LuCI) refuses outright is reported as a
// Problem; so is what libuci reads silently but not as written
// (Problem.Misread).
type parser struct {
	in  []byte // the input
	off int    // bytes of in read so far

	buf    []byte // the current buffer; buf[len(buf)-1] is always 0
	pos    int    // libuci's pctx->pos
	lineNo int    // the physical line most recently read, from 1
	failed bool   // the current line hit an error; skip to the next line

	file    *File
	cur     *Section // libuci's pctx->section
	optName string   // the option the current statement sets, once its name is read
	named   map[string]*Section
	probs   []Problem
	stopped bool // MaxProblems reached
}

func (p *parser) run() {
	for p.off < len(p.in) && !p.stopped {
		p.pos = 0
		p.failed = false
		p.getln(0)
		if p.buf[0] != 0 {
			p.parseLine()
		}
	}
}

// getln is uci_getln: the next input line (with its '\n') replaces the
// buffer from offset on. At the end of the input the buffer just ends at
// offset. As fgets and strlen do in C, a 0 byte in a line loses the rest
// of that line, which then runs on into the next.
func (p *parser) getln(offset int) {
	p.buf = append(p.buf[:offset], 0)
	for p.off < len(p.in) {
		line := p.in[p.off:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		p.off += len(line)
		p.lineNo++
		if len(line)-1 > MaxLineSize {
			p.problem(p.lineNo, "", fmt.Sprintf("line longer than %d KiB", MaxLineSize>>10))
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			p.misread(p.lineNo, "", "NUL byte in line: uci ignores the rest of the line")
			p.buf = append(append(p.buf[:len(p.buf)-1], line[:i]...), 0)
			if line[len(line)-1] == '\n' {
				continue
			}
			return
		}
		p.buf = append(append(p.buf[:len(p.buf)-1], line...), 0)
		return
	}
}

// at returns the byte at i, 0 past the end (the buffer's end is 0 anyway).
func (p *parser) at(i int) byte {
	if i < len(p.buf) {
		return p.buf[i]
	}
	return 0
}

func (p *parser) cur0() byte { return p.at(p.pos) }

// filled is libuci's pctx->buf_filled: the length of the buffer's text.
func (p *parser) filled() int { return len(p.buf) - 1 }

// cstr returns the 0-terminated string starting at i.
func (p *parser) cstr(i int) string {
	if i >= len(p.buf) {
		return ""
	}
	if j := bytes.IndexByte(p.buf[i:], 0); j >= 0 {
		return string(p.buf[i : i+j])
	}
	return string(p.buf[i:])
}

// restOfLine returns what is left of the current buffer from i up to its
// first '\n' or 0, for messages about text uci ignores.
func (p *parser) restOfLine(i int) string {
	s := p.cstr(i)
	if j := strings.IndexByte(s, '\n'); j >= 0 {
		s = s[:j]
	}
	return s
}

func (p *parser) problem(line int, option, msg string) {
	if option == "" {
		option = p.optName
	}
	p.report(Problem{Line: line, Section: p.ref(), Option: option, Msg: msg})
}

func (p *parser) misread(line int, option, msg string) {
	if option == "" {
		option = p.optName
	}
	p.report(Problem{Line: line, Section: p.ref(), Option: option, Msg: msg, Misread: true})
}

// fail is uci_parse_error: a problem that makes libuci drop the rest of
// the line (and strict libuci the whole file).
func (p *parser) fail(option, msg string) {
	p.problem(p.lineNo, option, msg)
	p.failed = true
}

func (p *parser) ref() string {
	if p.cur == nil {
		return ""
	}
	return p.file.SectionRef(p.cur)
}

func (p *parser) report(pr Problem) {
	if p.stopped {
		return
	}
	if len(p.probs) == MaxProblems-1 {
		p.probs = append(p.probs, Problem{Line: pr.Line, Msg: "too many problems; stopped checking"})
		p.stopped = true
		return
	}
	p.probs = append(p.probs, pr)
}

// parseLine is uci_parse_line: statements, split by strtok on spaces and
// tabs, until the buffer's text runs out.
func (p *parser) parseLine() {
	p.skipSpace()
	for !p.failed && !p.stopped {
		start, ok := p.strtok()
		if !ok {
			return
		}
		word := p.cstr(start)
		line := p.lineNo
		p.optName = ""
		bare := strings.TrimRight(word, " \t\r\n\v\f")
		switch {
		case word[0] == '#':
			return
		case word == "p" || word == "package":
			p.pkg()
		case word == "c" || word == "config":
			p.config(line)
		case word == "o" || word == "option":
			p.option(line, false)
		case word == "l" || word == "list":
			p.option(line, true)
		case bare != word && keywords[bare] != "":
			// strtok splits on spaces and tabs only: the keyword is
			// "config\n", which libuci does not know.
			p.fail("", "missing "+keywords[bare])
		case strings.TrimLeft(word, " \t\r\n\v\f") == "" && strings.Contains(word, "\n"):
			p.fail("", `nothing but the line break after ";": uci refuses this (remove the ";")`)
		default:
			p.fail("", "unknown keyword "+quoteShort(strings.TrimRight(word, "\r\n")))
		}
	}
}

// keywords maps each keyword to what must follow it.
var keywords = map[string]string{
	"p": "package name", "package": "package name",
	"c": "section type", "config": "section type",
	"o": "option name", "option": "option name",
	"l": "list name", "list": "list name",
}

// strtok is C's strtok(pctx_cur_str(pctx), " \t"): it skips spaces and
// tabs, ends the word found with a 0 and returns where it starts (pos does
// not move); false when the text has run out.
func (p *parser) strtok() (int, bool) {
	i := p.pos
	for c := p.at(i); c == ' ' || c == '\t'; c = p.at(i) {
		i++
	}
	if p.at(i) == 0 {
		return 0, false
	}
	start := i
	for c := p.at(i); c != 0 && c != ' ' && c != '\t'; c = p.at(i) {
		i++
	}
	if i < p.filled() {
		p.buf[i] = 0
	}
	return start, true
}

// skipKeyword moves past the keyword strtok found (uci_increase_pos);
// false, with the problem reported, when the keyword ends the text.
func (p *parser) skipKeyword(what string) bool {
	n := len(p.cstr(p.pos)) + 1
	if p.pos+n > p.filled() {
		p.fail("", "missing "+what)
		return false
	}
	p.pos += n
	return true
}

func (p *parser) skipSpace() {
	for c := p.cur0(); c != 0 && isSpace(c); c = p.cur0() {
		p.pos++
	}
}

// arg is one argument as next_arg returns it: where its text starts in the
// buffer, and the line it started on.
type arg struct {
	at   int
	line int
}

// next is next_arg without its checks: it reads one argument and returns
// its start (its text is p.cstr(a.at)).
func (p *parser) next() arg {
	p.skipSpace()
	a := arg{at: p.pos, line: p.lineNo}
	if p.cur0() == ';' {
		p.buf[p.pos] = 0
		p.pos++
		return a
	}
	p.parseStr(a.at)
	return a
}

// parseStr is parse_str: bare text, quoted parts and backslash escapes
// run together, written back into the buffer from target on.
func (p *parser) parseStr(target int) {
	start := target
	next := true
	misreadSemi := false
loop:
	for {
		switch c := p.cur0(); c {
		case '\'':
			p.singleQuote(&target)
		case '"':
			p.doubleQuote(&target)
		case '#':
			if p.pos > start {
				p.misread(p.lineNo, "", fmt.Sprintf("%q: \"#\" starts a comment for uci, even inside a word: it reads %q and ignores the rest of the line (quote the value to keep the \"#\")",
					p.restOfLine(start), string(p.buf[start:target])))
			}
			p.buf[p.pos] = 0
			break loop
		case 0:
			break loop
		case ';':
			next = false
			// Ending the word overwrites this very ';' with 0 when nothing
			// was unquoted before it: libuci then sees no more text on
			// the line.
			misreadSemi = target == p.pos
			break loop
		case '\\':
			if !p.backslash() {
				break // C's `continue` in a do-while: test the condition
			}
			p.addc(&target)
		default:
			p.addc(&target)
		}
		if p.failed {
			return
		}
		if c := p.cur0(); c == 0 || isSpace(c) {
			break
		}
	}
	if misreadSemi {
		if rest := strings.TrimSpace(p.restOfLine(p.pos + 1)); rest != "" && rest[0] != '#' {
			p.misread(p.lineNo, "", fmt.Sprintf("%q: a \";\" right after a word ends the line for uci: it ignores %s (write a space before the \";\")",
				string(p.buf[start:target])+";", quoteShort(rest)))
		}
	}
	if p.cur0() != 0 && next {
		p.pos++
	}
	p.buf[target] = 0
}

func (p *parser) addc(target *int) {
	p.buf[*target] = p.buf[p.pos]
	*target++
	p.pos++
}

// backslash is parse_backslash: it skips the '\'; at the end of the line
// it pulls in the next one and returns false, else the next byte is to be
// taken literally (true).
func (p *parser) backslash() bool {
	p.pos++
	c := p.cur0()
	if c == 0 || c == '\n' || (c == '\r' && p.at(p.pos+1) == '\n' && p.at(p.pos+2) == 0) {
		p.getln(p.pos)
		return false
	}
	return true
}

// singleQuote is parse_single_quote: everything up to the next ', no
// escapes; a line break is part of the value.
func (p *parser) singleQuote(target *int) {
	open, broken := p.lineNo, false
	p.pos++
	for {
		switch p.cur0() {
		case '\'':
			p.pos++
			p.spanned(open, broken, "'")
			return
		case 0:
			broken = true
			p.getln(p.pos)
			if p.cur0() == 0 {
				p.failAt(open, "unterminated single quote: the file ends inside it")
				return
			}
		default:
			p.addc(target)
		}
	}
}

// doubleQuote is parse_double_quote: up to the next unescaped "; a
// backslash takes the next byte literally ("\n" is n) and at the end of a
// line continues the value on the next.
func (p *parser) doubleQuote(target *int) {
	open, broken := p.lineNo, false
	p.pos++
	for {
		switch p.cur0() {
		case '"':
			p.pos++
			p.spanned(open, broken, `"`)
			return
		case 0:
			broken = true
			p.getln(p.pos)
			if p.cur0() == 0 {
				p.failAt(open, "unterminated double quote: the file ends inside it")
				return
			}
		case '\\':
			if !p.backslash() {
				continue
			}
			p.addc(target)
		default:
			p.addc(target)
		}
	}
}

// spanned reports a quote that held a line break (broken; a `\` at the end
// of a line inside "..." is a continuation, not a break): uci keeps the
// line breaks in the value, which is rarely what was meant.
func (p *parser) spanned(open int, broken bool, q string) {
	if broken {
		p.misread(open, "", fmt.Sprintf("the %s opened here closes on line %d: uci reads the lines between as part of the value (a missing %s?)", q, p.lineNo, q))
	}
}

func (p *parser) failAt(line int, msg string) {
	p.problem(line, "", msg)
	p.failed = true
}

// endOfStatement is assert_eol: one more argument is read, and strict
// libuci refuses the file when there is one (uci -S ignores it).
func (p *parser) endOfStatement(option, after string) {
	p.skipSpace()
	a := p.next()
	if p.failed {
		return
	}
	if extra := p.cstr(a.at); extra != "" {
		p.problem(a.line, option, fmt.Sprintf("unexpected %s after %s", quoteShort(extra), after))
	}
}

// pkg is uci_parse_package for a single file: the name is checked, and
// otherwise ignored.
func (p *parser) pkg() {
	if !p.skipKeyword("package name") {
		return
	}
	a := p.next()
	if p.failed {
		return
	}
	switch name := p.cstr(a.at); {
	case name == "":
		p.fail("", "missing package name")
		return
	case !validPackage(name):
		p.fail("", "invalid package name "+quoteShort(name))
		return
	}
	p.endOfStatement("", "package name")
}

// config is uci_parse_config.
func (p *parser) config(line int) {
	if !p.skipKeyword("section type") {
		return
	}
	ta := p.next()
	if p.failed {
		return
	}
	typ := p.cstr(ta.at)
	if typ == "" {
		p.fail("", "missing section type")
		return
	}
	if !validType(typ) {
		p.fail("", "invalid section type "+quoteShort(typ))
		return
	}
	na := p.next()
	if p.failed {
		return
	}
	name := p.cstr(na.at)
	if name != "" && !validName(name) {
		p.fail("", "invalid section name "+quoteShort(name))
		return
	}
	after := "section name"
	if name == "" {
		after = "section type"
	}
	p.endOfStatement("", after)
	if p.failed {
		return
	}
	if name == "" {
		p.addSection(typ, "", line)
		return
	}
	s, ok := p.named[name]
	if !ok {
		p.addSection(typ, name, line)
		return
	}
	if s.Type != typ {
		// Strict libuci refuses this; uci -S gives the section the new type.
		p.cur = s
		p.problem(line, "", fmt.Sprintf("redefined with type %s (was %s on line %d)", quoteShort(typ), quoteShort(s.Type), s.Line))
		s.Type = typ
	}
	p.cur = s
}

func (p *parser) addSection(typ, name string, line int) {
	s := &Section{Type: typ, Name: name, Line: line}
	if name != "" {
		p.named[name] = s
	}
	p.file.Sections = append(p.file.Sections, s)
	p.cur = s
}

// option is uci_parse_option (list says `list`).
func (p *parser) option(line int, list bool) {
	kw := "option"
	if list {
		kw = "list"
	}
	if p.cur == nil {
		p.fail("", kw+" before any config section")
		return
	}
	if !p.skipKeyword(kw + " name") {
		return
	}
	na := p.next()
	if p.failed {
		return
	}
	name := p.cstr(na.at)
	if name == "" {
		p.fail("", "missing "+kw+" name")
		return
	}
	if !validName(name) {
		p.fail("", "invalid "+kw+" name "+quoteShort(name))
		return
	}
	p.optName = name
	va := p.next()
	if p.failed {
		return
	}
	value := p.cstr(va.at)
	p.endOfStatement("", "value")
	if p.failed {
		return
	}
	p.cur.Options = append(p.cur.Options, Option{Name: name, Value: value, List: list, Line: line})
	if list {
		p.cur.addList(name, value, line)
	} else {
		p.cur.set(name, value, line)
	}
}
