// Package p2p joins mesh islands over the internet: it runs a libp2p host
// beside a qpq node (the bridge) and hands the daemon a link to each other
// island's bridge it meets (daemon.RunBridge), over which the usual push,
// summary and receipt protocol runs.
//
// A bridge's libp2p key is its qpq node key (Ed25519), so the libp2p
// handshake proves the qpq fingerprint: a peer whose fingerprint is not in
// the allow list is refused before it opens a stream. Bridges of one mesh
// domain meet on a libp2p protocol named after the domain and the shared
// rendezvous secret, so a bridge that lacks the secret finds nothing to
// talk to. They find each other through listed peers (config
// Bridge.Peers); this package never joins a public DHT or dials a public
// bootstrap node.
package p2p

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
)

const (
	// helloMagic starts the bridge hello each side writes on a new stream.
	helloMagic = "qpqbridge1"
	// helloTimeout bounds the bridge hello.
	helloTimeout = 10 * time.Second
	// dialTimeout bounds connecting to a listed bridge.
	dialTimeout = 20 * time.Second
	// minRedial and maxRedial bound the wait before dialling a listed
	// bridge again (doubling, with jitter).
	minRedial = time.Second
	maxRedial = time.Minute
	// stableLink is how long a link must have lasted for the next redial
	// to start again from minRedial.
	stableLink = time.Minute
)

// errSameIsland ends a bridge hello with a bridge of our own island: a
// keeper does not dial it again.
var errSameIsland = errors.New("it is of our own island")

// Protocol is the libp2p protocol the bridges of domain that share secret
// speak: its name carries an HMAC of the domain under the secret, so it
// names their rendezvous without showing either.
func Protocol(domain, secret string) protocol.ID {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("qpq bridge rendezvous v1\x00" + domain))
	return protocol.ID("/qpq/bridge/1/" + hex.EncodeToString(m.Sum(nil)[:16]))
}

// PeerID is the libp2p peer id of the node id: its node key's.
func PeerID(id *identity.Node) (peer.ID, error) {
	priv, err := privKey(id)
	if err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(priv)
}

func privKey(id *identity.Node) (crypto.PrivKey, error) {
	priv, err := crypto.UnmarshalEd25519PrivateKey(id.Key)
	if err != nil {
		return nil, fmt.Errorf("node key as libp2p key: %w", err)
	}
	return priv, nil
}

// Fingerprint is the qpq fingerprint of the libp2p peer p: of its
// Ed25519 key, which libp2p peer ids of that key type embed.
func Fingerprint(p peer.ID) (identity.Fingerprint, error) {
	pub, err := p.ExtractPublicKey()
	if err != nil {
		return identity.Fingerprint{}, fmt.Errorf("peer %s: no public key in its id: %w", p, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return identity.Fingerprint{}, fmt.Errorf("peer %s: key type %v, qpq bridges use Ed25519", p, pub.Type())
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return identity.Fingerprint{}, fmt.Errorf("peer %s: bad Ed25519 key", p)
	}
	return identity.FingerprintOf(ed25519.PublicKey(raw)), nil
}

// Bridge is a running libp2p host carrying bridge links for a daemon.
type Bridge struct {
	d      *daemon.Daemon
	h      host.Host
	cfg    config.Bridge
	proto  protocol.ID
	allow  map[identity.Fingerprint]bool
	peers  []peer.AddrInfo
	log    *slog.Logger
	gate   *gater
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards closed against wg.Add after Close's Wait, and the maps
	closed  bool
	wg      sync.WaitGroup   // served streams
	keepers sync.WaitGroup   // goroutines keeping links to known bridges
	kept    map[peer.ID]bool // bridges a keeper dials
	linked  map[peer.ID]int  // bridge links up, by peer
	kick    chan struct{}    // a link came up: exchange peers now

	closeOnce sync.Once
}

// New starts the libp2p host of d's bridge, whose node identity is id,
// listening on cfg.Bridge.Listen. Nothing is dialled until Run.
func New(d *daemon.Daemon, id *identity.Node, cfg config.Config, log *slog.Logger) (*Bridge, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.CheckBridge(); err != nil {
		return nil, err
	}
	b := &Bridge{d: d, cfg: cfg.Bridge, proto: Protocol(cfg.Domain, cfg.Bridge.Secret), allow: map[identity.Fingerprint]bool{}, log: log,
		kept: map[peer.ID]bool{}, linked: map[peer.ID]int{}, kick: make(chan struct{}, 1)}
	for _, fp := range cfg.Bridge.Allow {
		b.allow[fp] = true
	}
	for _, s := range cfg.Bridge.Peers {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, &config.OptionError{Option: "--bridge-peer", Value: s, Err: err}
		}
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, &config.OptionError{Option: "--bridge-peer", Value: s, Err: err}
		}
		fp, err := Fingerprint(info.ID)
		if err != nil {
			return nil, &config.OptionError{Option: "--bridge-peer", Value: s, Err: err}
		}
		if !b.allow[fp] {
			return nil, &config.OptionError{Option: "--bridge-peer", Value: s, Err: fmt.Errorf("its fingerprint %s is not in --bridge-allow", fp)}
		}
		b.peers = append(b.peers, *info)
	}
	for _, s := range cfg.Bridge.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return nil, &config.OptionError{Option: "--bridge-listen", Value: s, Err: err}
		}
	}
	priv, err := privKey(id)
	if err != nil {
		return nil, err
	}
	b.gate = &gater{allow: b.allow, log: log}
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(cfg.Bridge.Listen...),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.ConnectionGater(b.gate),
		// No NAT traversal: hole punching would need a relay no bridge
		// offers, and UPnP multicasts on the LAN. One bridge of each
		// pair must be reachable (README).
	)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host on %v: %w", cfg.Bridge.Listen, err)
	}
	b.h = h
	b.ctx, b.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(b.proto, b.serve)
	h.SetStreamHandler(b.peersProto(), b.servePeers)
	return b, nil
}

// Addrs are the bridge's listening addresses with its peer id, as other
// bridges list it (--bridge-peer).
func (b *Bridge) Addrs() []string {
	var out []string
	for _, a := range b.h.Addrs() {
		out = append(out, a.String()+"/p2p/"+b.h.ID().String())
	}
	return out
}

// ID is the bridge's libp2p peer id.
func (b *Bridge) ID() peer.ID { return b.h.ID() }

// Refused counts the connections refused for a fingerprint not allowed.
func (b *Bridge) Refused() uint64 {
	b.gate.mu.Lock()
	defer b.gate.mu.Unlock()
	return b.gate.refused
}

// Run keeps a link to every listed bridge until ctx is cancelled or Close
// is called; links other bridges open are served meanwhile.
func (b *Bridge) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, b.cancel)
	defer stop()
	for _, info := range b.peers {
		b.startKeep(info)
	}
	// The exchange loop is the only other starter of keepers (besides
	// keepers themselves): it ends before the keepers are waited for.
	exchanged := make(chan struct{})
	go func() {
		defer close(exchanged)
		b.exchangeLoop()
	}()
	<-b.ctx.Done()
	<-exchanged
	b.keepers.Wait()
}

// startKeep starts keeping a link to info unless one is kept already.
func (b *Bridge) startKeep(info peer.AddrInfo) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kept[info.ID] || b.ctx.Err() != nil {
		return
	}
	b.kept[info.ID] = true
	b.keepers.Add(1)
	go func() {
		defer b.keepers.Done()
		b.keep(info)
	}()
}

// Close stops the host and every bridge link, and waits for the links
// other bridges opened; Run waits for those it dialled. Safe to call more
// than once.
func (b *Bridge) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.cancel()
		b.mu.Unlock()
		b.h.RemoveStreamHandler(b.proto)
		b.h.RemoveStreamHandler(b.peersProto())
		err = b.h.Close()
		b.wg.Wait()
	})
	return err
}

// keep dials info until Close, again after each link ends, backing off.
func (b *Bridge) keep(info peer.AddrInfo) {
	fp, _ := Fingerprint(info.ID) // checked in New
	wait := minRedial
	for b.ctx.Err() == nil {
		var started time.Time
		if b.d.Bridged(fp) {
			// It dialled us: that link serves; look again later.
		} else {
			started = time.Now()
			err := b.dial(info, fp)
			if b.ctx.Err() != nil {
				return
			}
			if errors.Is(err, errSameIsland) {
				b.log.Warn("not dialling this bridge again: it is of our own island (bridges of one island link over the mesh)", "peer", fp)
				return
			}
			b.log.Info("bridge link ended; dialling again", "peer", fp, "err", err, "in", wait)
			if time.Since(started) > stableLink {
				wait = minRedial
			}
		}
		jitter := time.Duration(rand.Int64N(int64(wait/2) + 1))
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(wait/2 + jitter):
		}
		if !started.IsZero() {
			wait = min(2*wait, maxRedial)
		}
	}
}

// dial connects to info, opens the bridge stream and runs the link until
// it ends.
func (b *Bridge) dial(info peer.AddrInfo, fp identity.Fingerprint) error {
	ctx, cancel := context.WithTimeout(b.ctx, dialTimeout)
	defer cancel()
	if err := b.h.Connect(ctx, info); err != nil {
		return fmt.Errorf("connect to bridge %s: %w", fp, err)
	}
	s, err := b.h.NewStream(ctx, info.ID, b.proto)
	if err != nil {
		return fmt.Errorf("open bridge stream to %s: %w", fp, err)
	}
	island, err := b.hello(s, true)
	if err != nil {
		s.Reset()
		return err
	}
	return b.run(s, fp, island, true)
}

// serve takes a bridge stream another bridge opened.
func (b *Bridge) serve(s network.Stream) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.Reset()
		return
	}
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()
	fp, err := Fingerprint(s.Conn().RemotePeer())
	if err != nil || !b.allow[fp] {
		// The gater refuses these before they secure a connection.
		s.Reset()
		return
	}
	island, err := b.hello(s, false)
	if err != nil {
		b.log.Info("bridge hello failed", "peer", fp, "err", err)
		s.Reset()
		return
	}
	err = b.run(s, fp, island, false)
	b.log.Info("bridge link ended", "peer", fp, "err", err)
}

func (b *Bridge) run(s network.Stream, fp identity.Fingerprint, island string, outbound bool) error {
	id := s.Conn().RemotePeer()
	b.mu.Lock()
	b.linked[id]++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.linked[id]--; b.linked[id] <= 0 {
			delete(b.linked, id)
		}
		b.mu.Unlock()
	}()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return b.d.RunBridge(b.ctx, daemon.BridgeLink{Peer: fp, Island: island, Conn: s, Outbound: outbound,
		Addr: s.Conn().RemoteMultiaddr().String()})
}

// hello exchanges islands: the dialler writes first. Each side writes the
// magic, one length byte and its island name.
func (b *Bridge) hello(s network.Stream, dialler bool) (string, error) {
	s.SetDeadline(time.Now().Add(helloTimeout))
	defer s.SetDeadline(time.Time{})
	own := []byte(helloMagic)
	own = append(own, byte(len(b.cfg.Island)))
	own = append(own, b.cfg.Island...)
	// Read unbuffered: RPC follows at once, and must stay in the stream.
	r := io.Reader(s)
	read := func() (string, error) {
		hdr := make([]byte, len(helloMagic)+1)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return "", fmt.Errorf("bridge hello from %s: %w", s.Conn().RemotePeer(), err)
		}
		if string(hdr[:len(helloMagic)]) != helloMagic {
			return "", fmt.Errorf("bridge hello from %s: not a qpq bridge", s.Conn().RemotePeer())
		}
		name := make([]byte, hdr[len(helloMagic)])
		if _, err := io.ReadFull(r, name); err != nil {
			return "", fmt.Errorf("bridge hello from %s: %w", s.Conn().RemotePeer(), err)
		}
		if !descriptor.IslandRE.Match(name) {
			return "", fmt.Errorf("bridge hello from %s: island %q is not a valid name", s.Conn().RemotePeer(), name)
		}
		if string(name) == b.cfg.Island {
			return "", fmt.Errorf("bridge hello from %s: %w", s.Conn().RemotePeer(), errSameIsland)
		}
		return string(name), nil
	}
	if dialler {
		if _, err := s.Write(own); err != nil {
			return "", fmt.Errorf("bridge hello to %s: %w", s.Conn().RemotePeer(), err)
		}
	}
	island, err := read()
	if err != nil {
		return "", err
	}
	if !dialler {
		if _, err := s.Write(own); err != nil {
			return "", fmt.Errorf("bridge hello to %s: %w", s.Conn().RemotePeer(), err)
		}
	}
	return island, nil
}

// gater refuses every libp2p peer whose qpq fingerprint is not allowed,
// both ways, before a stream can be opened.
type gater struct {
	allow map[identity.Fingerprint]bool
	log   *slog.Logger

	mu      sync.Mutex
	refused uint64
}

func (g *gater) allowed(p peer.ID) bool {
	fp, err := Fingerprint(p)
	ok := err == nil && g.allow[fp]
	if !ok {
		g.mu.Lock()
		g.refused++
		g.mu.Unlock()
		// Debug: anyone can make keys and knock; the count is in Refused.
		g.log.Debug("refused a bridge not in the allow list", "peer", p, "fingerprint", fp)
	}
	return ok
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                                { return g.allowed(p) }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool                    { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool                     { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
