package p2p

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// Bridges tell each other where the other bridges they are linked to
// are, so that an operator lists one bridge it can reach and meets the
// rest of the domain through it: listed bootstrap peers as the
// rendezvous. A bridge dials only those of the learnt bridges that its
// allow list accepts.

const (
	// exchangeEvery is how often a bridge asks its linked bridges for
	// theirs (and at once when a link comes up).
	exchangeEvery = time.Minute
	// exchangeTimeout bounds one exchange.
	exchangeTimeout = 10 * time.Second
	// maxExchangeLines bounds an answer: addresses, one per line, each at
	// most maxExchangeLine bytes.
	maxExchangeLines = 64
	maxExchangeLine  = 512
)

func (b *Bridge) peersProto() protocol.ID { return b.proto + "/peers" }

// servePeers answers a linked bridge with the addresses of the other
// bridges linked here.
func (b *Bridge) servePeers(s network.Stream) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.Reset()
		return
	}
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()
	defer s.Close()
	asker := s.Conn().RemotePeer()
	if fp, err := Fingerprint(asker); err != nil || !b.allow[fp] {
		s.Reset()
		return
	}
	s.SetDeadline(time.Now().Add(exchangeTimeout))
	b.mu.Lock()
	ids := make([]peer.ID, 0, len(b.linked))
	for id := range b.linked {
		if id != asker {
			ids = append(ids, id)
		}
	}
	b.mu.Unlock()
	w := bufio.NewWriter(s)
	n := 0
	for _, id := range ids {
		for _, a := range b.h.Peerstore().Addrs(id) {
			line := a.String() + "/p2p/" + id.String()
			if n == maxExchangeLines || len(line) > maxExchangeLine {
				continue
			}
			fmt.Fprintln(w, line)
			n++
		}
	}
	w.Flush()
}

// exchangeLoop asks every linked bridge for its bridges every
// exchangeEvery, and at once when a link comes up, until the bridge
// closes.
func (b *Bridge) exchangeLoop() {
	t := time.NewTicker(exchangeEvery)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		b.mu.Lock()
		ids := make([]peer.ID, 0, len(b.linked))
		for id := range b.linked {
			ids = append(ids, id)
		}
		b.mu.Unlock()
		for _, id := range ids {
			if err := b.askPeers(id); err != nil && b.ctx.Err() == nil {
				b.log.Debug("bridge exchange", "peer", id, "err", err)
			}
		}
	}
}

// askPeers asks the bridge id for its bridges and keeps a link to each
// that the allow list accepts.
func (b *Bridge) askPeers(id peer.ID) error {
	ctx, cancel := context.WithTimeout(b.ctx, exchangeTimeout)
	defer cancel()
	s, err := b.h.NewStream(ctx, id, b.peersProto())
	if err != nil {
		return fmt.Errorf("ask %s for its bridges: %w", id, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(exchangeTimeout))
	s.CloseWrite()
	learnt, err := readPeers(s)
	if err != nil {
		return fmt.Errorf("bridges from %s: %w", id, err)
	}
	for _, info := range learnt {
		fp, err := Fingerprint(info.ID)
		if info.ID == b.h.ID() || info.ID == id || err != nil || !b.allow[fp] {
			continue
		}
		b.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.TempAddrTTL)
		b.startKeep(info)
	}
	return nil
}

// readPeers parses an exchange answer: at most maxExchangeLines
// multiaddrs ending in /p2p/<id>, grouped by peer.
func readPeers(r interface{ Read([]byte) (int, error) }) ([]peer.AddrInfo, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxExchangeLine+1), maxExchangeLine+1)
	byID := map[peer.ID]*peer.AddrInfo{}
	var order []peer.ID
	for n := 0; sc.Scan(); n++ {
		if n == maxExchangeLines {
			return nil, fmt.Errorf("more than %d addresses", maxExchangeLines)
		}
		a, err := ma.NewMultiaddr(strings.TrimSpace(sc.Text()))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		if byID[info.ID] == nil {
			byID[info.ID] = &peer.AddrInfo{ID: info.ID}
			order = append(order, info.ID)
		}
		byID[info.ID].Addrs = append(byID[info.ID].Addrs, info.Addrs...)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]peer.AddrInfo, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}
