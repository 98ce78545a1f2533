package config

import (
	"fmt"
	"path/filepath"

	"github.com/quicproquo/qpq/node/uci"
)

// The section `qpq node`'s settings live in: `config qpq 'main'` in
// /etc/config/qpq.
const (
	UCIType    = "qpq"
	UCISection = "main"
	// UCIBridge is the type and name of the section qpq-bridge's settings
	// live in: `config bridge 'bridge'`.
	UCIBridge = "bridge"
)

// Defaults of a node configured by uci (the OpenWrt service), where they
// differ from Default's: keys on flash in /etc/qpq (kept across
// sysupgrade), the store in RAM, the control socket in RAM in a directory
// the service owns.
const (
	UCIData    = "/etc/qpq"
	UCIStore   = "/tmp/qpq/store.db"
	UCIControl = "/var/run/qpq/qpq.sock"
	// DefaultZone is the firewall zone the service opens its ports from
	// when uci names none.
	DefaultZone = "lan"
)

// absolutePath lists the options that must be absolute in uci: the
// service's working directory is not the user's, and a relative path
// would land somewhere nobody looks.
var absolutePath = map[string]bool{"data": true, "store": true, "control": true}

// FromUCI checks a parsed uci file against the option table and returns
// the Config it describes (the uci defaults for what it leaves out) and
// every problem, each with its line, section and option. It works from
// the values as libuci resolves them (uci.Section.Values), so it reads
// exactly what the router's uci reads. The same parsers serve flags and
// environment variables, so a value valid in one is valid in all.
func FromUCI(f *uci.File) (Config, []uci.Problem) {
	cfg := Default()
	cfg.DataDir, cfg.Store, cfg.Control = UCIData, UCIStore, UCIControl
	var probs []uci.Problem
	byUCI, byBridge := map[string]Option{}, map[string]Option{}
	for _, o := range Options() {
		if o.Bridge {
			byBridge[o.UCIName()] = o
		} else {
			byUCI[o.UCIName()] = o
		}
	}
	var main, bridge *uci.Section
	for _, s := range f.Sections {
		ref := f.SectionRef(s)
		switch {
		case s.Type == UCIBridge && s.Name == UCIBridge:
			bridge = s
		case s.Type == UCIBridge:
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("the bridge's settings go in one section: config %s '%s'", UCIBridge, UCIBridge)})
		case s.Type != UCIType:
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("unknown section type %q (want %q)", s.Type, UCIType)})
		case s.Name == "":
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("unnamed section: the service reads only the section named %s: write config %s '%s'", UCISection, UCIType, UCISection)})
		case s.Name != UCISection:
			probs = append(probs, uci.Problem{Line: s.Line, Section: ref, Msg: fmt.Sprintf("unknown section; settings go in config %s '%s'", UCIType, UCISection)})
		default:
			main = s
		}
	}
	if main == nil {
		probs = append(probs, uci.Problem{Line: 1, Msg: fmt.Sprintf("no config %s '%s' section: the service cannot start without it", UCIType, UCISection)})
		return cfg, probs
	}
	probs = append(probs, readSection(&cfg, main, byUCI)...)
	if bridge != nil {
		probs = append(probs, readSection(&cfg, bridge, byBridge)...)
	}
	if len(cfg.Zones) == 0 {
		cfg.Zones = []string{DefaultZone}
	}
	// The socket path the node will really use (the uci default is short,
	// so a long data dir is fine) must fit a unix socket address.
	if len(cfg.Control) > maxSocketPath {
		line := main.Line
		if v, ok := main.Value("control"); ok {
			line = v.Line()
		}
		probs = append(probs, uci.Problem{Line: line, Section: main.Name, Option: "control", Msg: fmt.Sprintf(
			"%q: socket path is %d bytes, unix sockets allow %d: choose a shorter one", cfg.Control, len(cfg.Control), maxSocketPath)})
		return cfg, probs
	}
	if err := cfg.Finish(); err != nil {
		probs = append(probs, uci.Problem{Line: main.Line, Section: main.Name, Msg: err.Error()})
	}
	return cfg, probs
}

// readSection sets cfg from the options of one section, looked up in opts.
func readSection(cfg *Config, sec *uci.Section, opts map[string]Option) []uci.Problem {
	var probs []uci.Problem
	for _, v := range sec.Values() {
		o, ok := opts[v.Name]
		if !ok {
			probs = append(probs, uci.Problem{Line: v.Line(), Section: sec.Name, Option: v.Name, Msg: "unknown option"})
			continue
		}
		if v.List && !o.List {
			probs = append(probs, uci.Problem{Line: v.Lines[0], Section: sec.Name, Option: v.Name, Msg: "takes one value: write `option`, not `list`"})
			continue
		}
		// A list option written as `option NAME X` is a one-element list:
		// the node reads it itself, so it is honoured. A list from uci
		// replaces the default (bridge listen addresses).
		if o.reset != nil {
			o.reset(cfg)
		}
		for i, val := range v.Values {
			if val == "" {
				continue // an empty list element: a warning (UCIWarnings)
			}
			if !o.Bridge && absolutePath[v.Name] && !filepath.IsAbs(val) {
				probs = append(probs, uci.Problem{Line: v.Lines[i], Section: sec.Name, Option: v.Name, Msg: fmt.Sprintf("%q: must be an absolute path", val)})
				continue
			}
			if err := o.set(cfg, val); err != nil {
				probs = append(probs, uci.Problem{Line: v.Lines[i], Section: sec.Name, Option: v.Name, Msg: fmt.Sprintf("%q: %v", val, err)})
			}
		}
	}
	return probs
}
