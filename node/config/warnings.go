package config

import (
	"fmt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/uci"
)

// LargestStoredMessage is what the store charges for the largest message a
// client can send: an envelope whose sealed payload is gossip.MaxPayload
// (a 16 KiB body plus the sealing overhead, padded to 256 bytes), with its
// fixed fields, bounded by gossip.MaxEnvelope.
const LargestStoredMessage = gossip.MaxEnvelope

// perSourceDivisor is how many equal shares of the store one source gets.
const perSourceDivisor = 16

// PerSourceShare is the most one source (one link or one client address)
// may hold in a store of maxBytes. It must equal the MaxPerSource the node
// gives its store (node/daemon: StoreMaxBytes/16), or the warning below
// would describe a store other than the one that runs.
func PerSourceShare(maxBytes int64) int64 { return maxBytes / perSourceDivisor }

// Warning is a valid setting that will hurt: the node starts, but behaves
// in a way its operator probably did not intend.
type Warning struct {
	Option string // the option's flag name, e.g. "store-max-bytes"
	Msg    string
}

// Warnings returns what in c is valid but harmful, each naming its option
// (never nil). `qpq config check` prints them and `qpq node` logs them.
func (c Config) Warnings() []Warning {
	ws := []Warning{}
	if share := PerSourceShare(c.StoreMaxBytes); share < LargestStoredMessage {
		need := int64(LargestStoredMessage) * perSourceDivisor
		ws = append(ws, Warning{Option: "store-max-bytes", Msg: fmt.Sprintf(
			"%s gives each source a share of %s (1/%d of the store), less than the largest sealed message (%s): every large message will be refused with \"source over its store quota\"; set at least %s",
			formatSize(c.StoreMaxBytes), formatSize(share), perSourceDivisor, formatSize(LargestStoredMessage), formatSize(roundUpK(need)))})
	}
	return ws
}

// UCIWarnings returns c's warnings as problems at the line of the uci
// option they are about (the section's line when the option is not set
// there), their message starting with "warning: ".
func UCIWarnings(f *uci.File, c Config) []uci.Problem {
	var main *uci.Section
	for _, s := range f.Sections {
		if s.Type == UCIType && s.Name == UCISection {
			main = s
		}
	}
	var out []uci.Problem
	for _, w := range c.Warnings() {
		p := uci.Problem{Option: w.Option, Msg: "warning: " + w.Msg, Line: 1}
		if o, ok := Lookup(w.Option); ok {
			p.Option = o.UCIName()
		}
		if main != nil {
			p.Section, p.Line = main.Name, main.Line
			for _, opt := range main.Options {
				if opt.Name == p.Option {
					p.Line = opt.Line
				}
			}
		}
		out = append(out, p)
	}
	return out
}

// formatSize prints n in the units --store-max-bytes accepts when exact
// (512K, 16M), else in bytes.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func roundUpK(n int64) int64 { return (n + 1<<10 - 1) &^ (1<<10 - 1) }
