package config

import (
	"fmt"

	"github.com/quicproquo/qpq/node/uci"
)

// UCISection is the section `qpq node`'s settings live in:
// `config qpq 'main'` in /etc/config/qpq.
const (
	UCIType    = "qpq"
	UCISection = "main"
)

// FromUCI checks a parsed uci file against the option table and returns
// the Config it describes (defaults for what it leaves out) and every
// problem, each with its line, section and option. The same parsers serve
// flags and environment variables, so a value valid in one is valid in all.
func FromUCI(f *uci.File) (Config, []uci.Problem) {
	cfg := Default()
	var probs []uci.Problem
	byUCI := map[string]Option{}
	for _, o := range Options() {
		byUCI[o.UCIName()] = o
	}
	var main *uci.Section
	for _, s := range f.Sections {
		ref := f.SectionRef(s)
		if s.Type != UCIType {
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("unknown section type %q (want %q)", s.Type, UCIType)})
			continue
		}
		if s.Name != UCISection {
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("unknown section; settings go in config %s '%s'", UCIType, UCISection)})
			continue
		}
		main = s
	}
	if main == nil {
		probs = append(probs, uci.Problem{Line: 1, Msg: fmt.Sprintf("no config %s '%s' section", UCIType, UCISection)})
		return cfg, probs
	}
	for _, opt := range main.Options {
		o, ok := byUCI[opt.Name]
		if !ok {
			probs = append(probs, uci.Problem{Line: opt.Line, Section: main.Name, Option: opt.Name, Msg: "unknown option"})
			continue
		}
		if opt.List && !o.List {
			probs = append(probs, uci.Problem{Line: opt.Line, Section: main.Name, Option: opt.Name, Msg: "takes one value: write `option`, not `list`"})
			continue
		}
		if !opt.List && o.reset != nil {
			// uci: an `option` replaces the list so far.
			o.reset(&cfg)
		}
		if err := o.set(&cfg, opt.Value); err != nil {
			probs = append(probs, uci.Problem{Line: opt.Line, Section: main.Name, Option: opt.Name, Msg: fmt.Sprintf("%q: %v", opt.Value, err)})
		}
	}
	if err := cfg.Finish(); err != nil {
		probs = append(probs, uci.Problem{Line: main.Line, Section: main.Name, Msg: err.Error()})
	}
	return cfg, probs
}
