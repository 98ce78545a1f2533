package config

import (
	"flag"
	"strings"
)

// Binding connects some options to a flag set.
type Binding struct {
	fs    *flag.FlagSet
	opts  []Option
	given map[string][]string // raw values given as flags, by option name
}

// Bind registers the named options as flags on fs. Unknown names are a
// programming error and panic at start-up, never on user input.
func Bind(fs *flag.FlagSet, names ...string) *Binding {
	b := &Binding{fs: fs, given: map[string][]string{}}
	for _, n := range names {
		o, ok := Lookup(n)
		if !ok || o.UCIOnly {
			panic("config: no flag option " + n)
		}
		b.opts = append(b.opts, o)
		usage := o.Usage
		if o.Env != "" {
			usage += " [$" + o.Env + "]"
		}
		check := func(v string) error {
			// Check now, so the flag package names the flag in the error.
			scratch := Default()
			if err := o.set(&scratch, v); err != nil {
				return err
			}
			b.given[o.Name] = append(b.given[o.Name], v)
			return nil
		}
		if o.Bool {
			fs.BoolFunc(o.Name, usage, check)
		} else {
			fs.Func(o.Name, usage, check)
		}
	}
	return b
}

// Parse parses args, then builds the Config: defaults, then environment
// variables, then flags (flags win; a list given as flags replaces the
// variable's list). Errors are *OptionError or the flag package's, both
// naming the flag or variable; the CLI exits 2 on either.
func (b *Binding) Parse(args []string, getenv func(string) string) (Config, error) {
	if err := b.fs.Parse(args); err != nil {
		return Config{}, err
	}
	return b.Over(Default(), getenv)
}

// Over builds the Config from base and what the flag set (already parsed)
// holds: environment variables first when getenv is not nil, then flags.
// A list given as flags replaces base's list and the variable's. `qpq node
// --uci` passes the uci file's Config as base and no getenv, so flags
// given beside --uci override the file and QPQ_* variables are not read.
func (b *Binding) Over(base Config, getenv func(string) string) (Config, error) {
	cfg := base
	for _, o := range b.opts {
		if vals, ok := b.given[o.Name]; ok {
			if o.reset != nil {
				o.reset(&cfg)
			}
			for _, v := range vals {
				if err := o.set(&cfg, v); err != nil {
					return Config{}, &OptionError{Option: "--" + o.Name, Value: v, Err: err}
				}
			}
			continue
		}
		if o.Env == "" || getenv == nil {
			continue
		}
		raw := getenv(o.Env)
		if raw == "" {
			continue
		}
		vals := []string{raw}
		if o.List {
			vals = nil
			for _, v := range strings.Split(raw, ",") {
				if v = strings.TrimSpace(v); v != "" {
					vals = append(vals, v)
				}
			}
			if o.reset != nil {
				o.reset(&cfg)
			}
		}
		for _, v := range vals {
			if err := o.set(&cfg, v); err != nil {
				return Config{}, &OptionError{Option: o.Env, Value: v, Err: err}
			}
		}
	}
	if err := cfg.Finish(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
