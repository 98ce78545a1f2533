package daemon

import (
	"sort"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/buildinfo"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/schemas"
)

// pick says why a link is kept, for status; d.mu is held.
func (d *Daemon) pick(l *link.Link, via string) string {
	switch {
	case !l.Outbound() || (via != viaMDNS && via != viaExchange):
		return ""
	case l.Peer() == d.trial:
		return "trial"
	case d.anchor[l.Peer()]:
		return "random"
	default:
		return "rtt"
	}
}

// Status reports the node and its links for the control socket.
func (d *Daemon) Status() control.Status {
	fp := d.id.Fingerprint()
	st := control.Status{
		Fingerprint: fp.String(),
		Short:       fp.Short(),
		Version:     buildinfo.Version,
		Listen:      d.Addr(),
		UptimeS:     int64(time.Since(d.started) / time.Second),
		Peers:       []control.Peer{},
	}
	ss := d.st.Stats()
	sn := d.eng.SeenStats()
	st.Seen = control.Seen{FillRatio: sn.FillRatio, FPRate: sn.FPRate, Duplicates: sn.Duplicates, FalsePositives: sn.FalsePositives, MemoryBytes: sn.MemoryBytes}
	st.Store = control.Store{Path: d.st.Path(), Envelopes: ss.Envelopes, Bytes: ss.Bytes, MaxBytes: ss.MaxBytes, Tombstones: ss.Tombstones, Kinds: map[string]int{}}
	st.Store.Damaged = ss.Damaged
	hs := d.tr.HandshakeStats()
	st.Handshakes = control.Handshakes{InProgress: hs.InProgress, Retries: hs.Retries, Refused: hs.Refused}
	ds := d.Dialled()
	st.Dialled = control.Dialled{Out: ds.Out, Dialling: ds.Dialling, In: ds.In}
	ps := d.place.stats()
	st.Placement = control.Placement{K: ps.K, Nodes: ps.Nodes, Eligible: ps.Eligible, Held: ps.Held, Boxed: ps.Boxed,
		Placed: ps.Placed, Flooded: ps.Flooded, Fallbacks: ps.Fallbacks, Pulled: ps.Pulled}
	st.Onion = d.onion.stats()
	st.Cells = d.cellStats()
	st.Loops = d.onion.loopStats()
	d.st.IDs(func(_ gossip.ID, k schemas.Envelope_Kind) bool {
		st.Store.Kinds[k.String()]++
		return true
	})
	d.mu.Lock()
	for _, l := range d.links {
		dir := "inbound"
		if l.Outbound() {
			dir = "outbound"
		}
		via := d.via[l.Peer()]
		if via == "" {
			via = viaInbound
			if l.Outbound() {
				via = viaStatic
			}
		}
		sent, received := l.Bytes()
		st.Peers = append(st.Peers, control.Peer{
			Via:           via,
			Fingerprint:   l.Peer().String(),
			Addr:          l.RemoteAddr().String(),
			Direction:     dir,
			RTTMs:         float64(l.RTT().Microseconds()) / 1000,
			BytesSent:     sent,
			BytesReceived: received,
			LinkedS:       int64(time.Since(l.Since()) / time.Second),
			Pick:          d.pick(l, via),
			Protocol:      int(l.Version()),
		})
	}
	st.Peers = append(st.Peers, d.bridgePeersLocked()...)
	d.mu.Unlock()
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Fingerprint < st.Peers[j].Fingerprint })
	return st
}
