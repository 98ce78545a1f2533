package config

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/node/uci"
)

// LargestStoredMessage is what the store charges for the largest message a
// client can send: an envelope whose sealed payload is gossip.MaxPayload
// (a 16 KiB body plus the sealing overhead, padded to 256 bytes), with its
// fixed fields, bounded by gossip.MaxEnvelope, plus the store's record
// header.
const LargestStoredMessage = gossip.MaxEnvelope + store.RecordOverhead

// PerSourceShare is the most one source (one link or one client address)
// may hold in one mailbox of a store of maxBytes, as the node opens its
// store (the store's defaults).
func PerSourceShare(maxBytes int64) int64 { return store.PerSourceShare(maxBytes) }

// minStoreFor returns the smallest store size, in whole KiB, whose
// per-source share holds a message of msg bytes.
func minStoreFor(msg int64) int64 {
	lo, hi := int64(1), int64(1<<30) // in KiB; hi always suffices
	for lo < hi {
		mid := lo + (hi-lo)/2
		if PerSourceShare(mid<<10) >= msg {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo << 10
}

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
		ws = append(ws, Warning{Option: "store-max-bytes", Msg: fmt.Sprintf(
			"%s gives each source a share of %s, less than the largest sealed message (%s): every large message will be refused with \"store full for this source\"; set at least %s",
			formatSize(c.StoreMaxBytes), formatSize(share), formatSize(LargestStoredMessage), formatSize(minStoreFor(LargestStoredMessage)))})
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
	if main != nil {
		// uci reads an empty value as no value: the default applies. Worth
		// telling, not refusing (the service runs as uci reads it).
		for _, opt := range main.Options {
			if opt.Value != "" {
				continue
			}
			msg := "warning: empty value: uci reads an empty option as absent, so the default applies (delete the line or give a value)"
			if opt.List {
				msg = "warning: empty list element: uci leaves it out (delete the line or give a value)"
			}
			out = append(out, uci.Problem{Line: opt.Line, Section: main.Name, Option: opt.Name, Msg: msg})
		}
	}
	slices.SortStableFunc(out, func(a, b uci.Problem) int { return cmp.Compare(a.Line, b.Line) })
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
