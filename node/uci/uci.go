// Package uci reads OpenWrt uci configuration files (/etc/config/*) exactly
// as libuci reads them: its parser (uci/file.c) is followed step by step,
// quirks included, and cross/uci_test.go checks the result against the real
// uci on crafted and random files. So what the node reads from
// /etc/config/qpq is what `uci show qpq` shows. In particular: a word is
// bare text, '...' parts (no escapes) and "..." parts run together; a
// backslash makes the next byte literal ("\n" is n) or, at the end of a
// line, continues it; a quote runs on over line breaks, which stay in the
// value; `#` ends a word even inside bare text (http://x/#y reads as
// http://x/); a `;` after a space or a quote separates statements, but a
// `;` right after a bare word ends the whole line; a named section that
// appears twice is one section; an empty `option` sets nothing, and an
// empty `list` element is added.
//
// Parse never panics and never stops at the first problem: it reads on as
// `uci -S` does, a line at a time, and returns every problem, each with its
// line, so that `qpq config check` can print them all. A Problem is either
// something strict libuci refuses (uci show fails on the file) or a
// Misread: something libuci reads silently but not as it looks, such as
// the `;` above. Input is bounded (MaxFileSize, MaxProblems) so a broken
// file cannot exhaust a small router's memory.
package uci

import (
	"fmt"
	"strings"
)

// Limits on what Parse reads, so memory stays bounded on 64 MB routers.
const (
	// MaxFileSize is the most Parse reads; anything beyond is reported and
	// ignored.
	MaxFileSize = 1 << 20
	// MaxLineSize is the longest line Parse accepts without a problem, not
	// counting the newline; a longer line is read as libuci reads it and
	// reported.
	MaxLineSize = 64 << 10
	// MaxProblems is the most problems Parse returns; the last one then says
	// it stopped checking.
	MaxProblems = 1000
)

// File is a parsed uci file. A `package` statement is checked but not
// recorded: the file's path names the package.
type File struct {
	// Sections in file order. A named section that appears twice (with the
	// same type) is one Section, as in uci: the second `config` line adds to
	// the first.
	Sections []*Section
}

// Section is one `config TYPE ['NAME']` section.
type Section struct {
	Type string
	Name string // "" when anonymous; see File.SectionRef for uci's name for it
	Line int    // line of the (first) `config` statement, counting from 1
	// Options holds one entry per `option` or `list` statement libuci
	// applied, in file order, as written; Values has what they add up to.
	Options []Option
	values  []Value
	index   map[string]int // values' index by name
}

// Option is one `option NAME VALUE` or `list NAME VALUE` statement.
type Option struct {
	Name  string
	Value string // with quoting and escapes removed
	List  bool   // written as `list`
	Line  int    // line of the statement, counting from 1
}

// Problem is something wrong in a uci file.
type Problem struct {
	Line    int    // counting from 1
	Section string // the section's name, `@type[index]` when anonymous, "" outside any section
	Option  string // the option or list name, "" when the problem is not about one
	Msg     string
	// Misread says libuci accepts this without complaint but reads it
	// other than it looks (a `;` right after a word drops the rest of the
	// line, `#` inside a word starts a comment, a quote runs over lines).
	// Otherwise strict libuci (uci show, uci get) refuses the file here, or
	// it is beyond Parse's limits.
	Misread bool
}

// Format renders the problem as DESIGN's "FILE:LINE: section.option: problem";
// when Option is empty, "FILE:LINE: section: problem"; when Section is also
// empty, "FILE:LINE: problem". (An Option without a Section renders as
// "FILE:LINE: option: problem".)
func (p Problem) Format(file string) string {
	var where string
	switch {
	case p.Section != "" && p.Option != "":
		where = p.Section + "." + p.Option + ": "
	case p.Section != "":
		where = p.Section + ": "
	case p.Option != "":
		where = p.Option + ": "
	}
	return fmt.Sprintf("%s:%d: %s%s", file, p.Line, where, p.Msg)
}

// Section returns the section of type typ named name, or nil. With name ""
// it returns the first anonymous section of that type.
func (f *File) Section(typ, name string) *Section {
	for _, s := range f.Sections {
		if s.Type == typ && s.Name == name {
			return s
		}
	}
	return nil
}

// SectionRef returns the name `uci show` gives s: its name, or `@type[index]`
// for an anonymous section, index counting every section of that type before
// it. It returns "" when s is not in f.
func (f *File) SectionRef(s *Section) string {
	n := 0
	for _, t := range f.Sections {
		if t == s {
			if s.Name != "" {
				return s.Name
			}
			return anonRef(s.Type, n)
		}
		if t.Type == s.Type {
			n++
		}
	}
	return ""
}

func anonRef(typ string, index int) string {
	return fmt.Sprintf("@%s[%d]", typ, index)
}

// quoteShort quotes s for a message, cutting it short when it is long.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// validName reports whether s is a valid option or section name: letters,
// digits and '_'.
func validName(s string) bool {
	return validChars(s, func(c byte) bool { return isAlnum(c) || c == '_' })
}

// validType reports whether s is a valid section type: printable ASCII
// without spaces, as libuci accepts.
func validType(s string) bool {
	return validChars(s, func(c byte) bool { return c > ' ' && c < 0x7f })
}

// validPackage reports whether s is a valid package name: letters, digits,
// '_' and '-'.
func validPackage(s string) bool {
	return validChars(s, func(c byte) bool { return isAlnum(c) || c == '_' || c == '-' })
}

func validChars(s string, ok func(byte) bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isSpace is C's isspace in the C locale, which libuci uses.
func isSpace(c byte) bool {
	return strings.IndexByte(" \t\n\v\f\r", c) >= 0
}
