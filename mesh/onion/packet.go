// Package onion builds and peels the mesh's onion packets: Sphinx-style
// packets of one fixed size that carry a payload through up to MaxHops
// relays, each of which learns only the relay before it and the one
// after (or that it is the exit), never its position on the route nor
// the route's length.
//
// # Geometry
//
// A packet is CellsPerPacket link cells of CellSize bytes. A cell fits
// one QUIC datagram: the mesh's paths carry 1,280-byte IPv6 packets at
// least, of which about 1,200 bytes are left for a datagram frame's data
// after QUIC's header and AEAD tag; a 1,024-byte cell leaves the rest for
// the cell's own framing. A packet is also a whole number of 256-byte
// blocks, so it travels as an envelope's payload too (store and forward,
// when the next relay cannot be reached now). So:
//
//	Size        = 4 cells x 1,024          = 4,096 bytes
//	header      = version 1 + epoch 4 + ephemeral key 32
//	              + routing 5 slots x 96 + MAC 32 =   549 bytes
//	PayloadSize = 4,096 - 549              = 3,547 bytes
//
// A sealed DM with a 256-byte body is a 1,792-byte payload, about 1,950
// bytes as an envelope; with a fragment header (21 bytes) and a reply
// block (a header and a key, about 600 bytes) it fits one packet's
// payload, and bodies up to about 1.2 KB do too. A longer DM (up to the
// 16 KiB body limit, about 18,100 bytes as an envelope) is cut into up to
// MaxFragments packets of the same size, which the exit puts back
// together (fragment.go).
//
// A slot (96 bytes) is what one relay reads: an action (forward or
// exit), the next relay's fingerprint (32) and the key epoch it must use
// (4), the MAC the next relay checks (32), and SlotDataSize bytes for the
// hop itself (27). Five slots make the routing section; routes shorter
// than five are padded, and the filler (below) hides where the real
// slots end.
//
// # Per hop
//
// The sender picks an ephemeral X25519 key x. Relay i (0-based) holds the
// onion key k_i of its signed descriptor and receives alpha_i; both sides
// derive the shared secret s_i = SHA-256(label || X25519(k_i, alpha_i))
// and, from it, one key per purpose (HMAC-SHA256 keyed with s_i over a
// label): rho for the routing stream, mu for the MAC, pi for the payload
// stream, and the replay tag. alpha_0 = x*G and alpha_{i+1} =
// b_i*alpha_i with the blinding factor b_i = SHA-256(label || alpha_i ||
// s_i), so no two relays see the same ephemeral key and the sender
// reaches s_i as b_{i-1}*...*b_0*x*K_i (X25519's scalar multiplications
// commute). A relay checks the MAC over everything it received but the
// MAC itself (version, epoch, alpha, routing, payload), so one flipped
// byte anywhere is caught at the next relay; then it decrypts the
// routing section, extended by one slot of zeros, with ChaCha20 under
// rho, reads its slot, shifts the rest up by one slot, decrypts the
// payload with ChaCha20 under pi, blinds alpha and forwards. What the
// shift brings in at the end is keystream the sender computed ahead (the
// filler), so the next relay's MAC, computed by the sender over the same
// bytes, matches.
//
// Post-quantum protection stays in the end-to-end layer inside (the
// sealed DM is hybrid); the onion layer is classical X25519.
package onion

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Sizes; the package comment does the arithmetic.
const (
	CellSize       = 1024
	CellsPerPacket = 4
	Size           = CellsPerPacket * CellSize
	MaxHops        = 5
	SlotSize       = 96
	SlotDataSize   = SlotSize - slotData
	PayloadSize    = Size - headerSize
	// Version is the first byte of every packet this package builds.
	Version = 1

	keySize     = 32
	macSize     = 32
	routingSize = MaxHops * SlotSize
	offEpoch    = 1
	offAlpha    = offEpoch + 4
	offRouting  = offAlpha + keySize
	offMAC      = offRouting + routingSize
	headerSize  = offMAC + macSize

	// A slot: action, next fingerprint, next epoch, next MAC, data.
	slotNext  = 1
	slotEpoch = slotNext + 32
	slotMAC   = slotEpoch + 4
	slotData  = slotMAC + macSize
)

// Action is what a relay does with a packet it peeled.
type Action uint8

// Actions.
const (
	// Forward hands the peeled packet to the next relay.
	Forward Action = 1
	// Exit ends the route here: the payload is for this relay.
	Exit Action = 2
	// Deliver ends a reply route (reply.go) at the sender's entry node:
	// the hop's Data starts with the reply id its client waits for.
	Deliver Action = 3
)

func (a Action) String() string {
	switch a {
	case Forward:
		return "forward"
	case Exit:
		return "exit"
	case Deliver:
		return "deliver"
	}
	return fmt.Sprintf("action %d", uint8(a))
}

// Errors of Peel and Build.
var (
	ErrSize    = errors.New("onion packet has the wrong size")
	ErrVersion = errors.New("onion packet of an unknown version")
	ErrKey     = errors.New("onion packet's ephemeral key is not usable")
	ErrMAC     = errors.New("onion packet fails its MAC: altered, or not for this key")
	ErrSlot    = errors.New("onion packet's routing slot is not valid")
	ErrRoute   = errors.New("onion route is not valid")
)

// Hop is one relay of a route as the sender knows it from the relay's
// signed descriptor.
type Hop struct {
	Node  identity.Fingerprint // the relay the hop before forwards to
	Key   *ecdh.PublicKey      // its onion key (X25519)
	Epoch uint32               // that key's epoch, put in the header for it
	// Data is for this relay alone (what the exit does with the payload).
	Data [SlotDataSize]byte
}

// Peeled is one relay's view of a packet once its layer is off.
type Peeled struct {
	Action Action
	// Next and NextEpoch name the relay to forward to and the key epoch
	// it must use (Forward).
	Next      identity.Fingerprint
	NextEpoch uint32
	// Data is the hop's own data from its slot.
	Data [SlotDataSize]byte
	// Packet is the packet for Next (Forward), Size bytes.
	Packet []byte
	// Payload is the payload, decrypted (Exit), PayloadSize bytes.
	Payload []byte
	// Tag is the same whenever the same packet reaches this relay under
	// the same key, and differs otherwise: the replay cache's key.
	Tag [32]byte
}

// Epoch returns the key epoch a packet says its relay must use, so the
// relay can pick the key before Peel.
func Epoch(pkt []byte) (uint32, error) {
	if err := checkFrame(pkt); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(pkt[offEpoch:]), nil
}

func checkFrame(pkt []byte) error {
	if len(pkt) != Size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrSize, len(pkt), Size)
	}
	if pkt[0] != Version {
		return fmt.Errorf("%w: %d, want %d", ErrVersion, pkt[0], Version)
	}
	return nil
}

// hopKeys are the keys one hop derives from its shared secret.
type hopKeys struct {
	rho, mu, pi, tag [32]byte
	blind            [32]byte
}

var (
	labelSecret = []byte("qpq onion v1 secret")
	labelBlind  = []byte("qpq onion v1 blind")
	labelRho    = []byte("qpq onion v1 rho")
	labelMu     = []byte("qpq onion v1 mu")
	labelPi     = []byte("qpq onion v1 pi")
	labelTag    = []byte("qpq onion v1 replay")
)

func derive(dh, alpha []byte) hopKeys {
	var k hopKeys
	h := sha256.New()
	h.Write(labelSecret)
	h.Write(dh)
	s := h.Sum(nil)
	for _, p := range []struct {
		out   *[32]byte
		label []byte
	}{{&k.rho, labelRho}, {&k.mu, labelMu}, {&k.pi, labelPi}, {&k.tag, labelTag}} {
		m := hmac.New(sha256.New, s)
		m.Write(p.label)
		m.Sum(p.out[:0])
	}
	h.Reset()
	h.Write(labelBlind)
	h.Write(alpha)
	h.Write(s)
	h.Sum(k.blind[:0])
	return k
}

// stream XORs dst with n bytes of ChaCha20 keystream under key, from the
// stream's start (each key is used for one stream only).
func stream(key *[32]byte, dst []byte) {
	var nonce [chacha20.NonceSize]byte
	c, err := chacha20.NewUnauthenticatedCipher(key[:], nonce[:])
	if err != nil {
		panic(err) // key and nonce have fixed, valid sizes
	}
	c.XORKeyStream(dst, dst)
}

// mac is the MAC of a packet's header (but the MAC) and payload.
func mac(mu *[32]byte, pkt []byte) []byte {
	m := hmac.New(sha256.New, mu[:])
	m.Write(pkt[:offMAC])
	m.Write(pkt[headerSize:])
	return m.Sum(nil)
}

// mul is X25519(scalar, point): scalar multiplication of the point by
// the (clamped) scalar.
func mul(scalar []byte, point *ecdh.PublicKey) (*ecdh.PublicKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(scalar)
	if err != nil {
		return nil, err
	}
	out, err := k.ECDH(point)
	if err != nil {
		return nil, err // a low-order point
	}
	return ecdh.X25519().NewPublicKey(out)
}

// Build makes the packet that carries payload (at most PayloadSize bytes,
// zero-padded to it) through route, 1 to MaxHops relays, the last one the
// exit. rnd supplies the ephemeral key and the padding (crypto/rand's
// Reader outside tests).
func Build(route []Hop, payload []byte, rnd io.Reader) ([]byte, error) {
	if len(payload) > PayloadSize {
		return nil, fmt.Errorf("%w: payload of %d bytes, at most %d", ErrRoute, len(payload), PayloadSize)
	}
	return build(route, Exit, func([]hopKeys) []byte {
		p := make([]byte, PayloadSize)
		copy(p, payload)
		return p
	}, rnd)
}

// build makes a packet through route whose last hop is told last, with
// the payload the last hop reads given by inner (from every hop's keys).
func build(route []Hop, last Action, inner func([]hopKeys) []byte, rnd io.Reader) ([]byte, error) {
	n := len(route)
	if n < 1 || n > MaxHops {
		return nil, fmt.Errorf("%w: %d relays, want 1 to %d", ErrRoute, n, MaxHops)
	}
	for i, h := range route {
		if h.Key == nil || h.Key.Curve() != ecdh.X25519() {
			return nil, fmt.Errorf("%w: relay %d has no X25519 onion key", ErrRoute, i)
		}
	}
	x, err := ecdh.X25519().GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("onion ephemeral key: %w", err)
	}
	// Each hop's alpha and keys: s_i is x*K_i blinded by b_0..b_{i-1}.
	alphas := make([]*ecdh.PublicKey, n)
	keys := make([]hopKeys, n)
	alphas[0] = x.PublicKey()
	for i := range route {
		dh, err := x.ECDH(route[i].Key)
		if err != nil {
			return nil, fmt.Errorf("%w: relay %d: %v", ErrRoute, i, err)
		}
		p, err := ecdh.X25519().NewPublicKey(dh)
		if err != nil {
			return nil, fmt.Errorf("%w: relay %d: %v", ErrRoute, i, err)
		}
		for j := range i {
			if p, err = mul(keys[j].blind[:], p); err != nil {
				return nil, fmt.Errorf("%w: relay %d: %v", ErrRoute, i, err)
			}
		}
		keys[i] = derive(p.Bytes(), alphas[i].Bytes())
		if i+1 < n {
			if alphas[i+1], err = mul(keys[i].blind[:], alphas[i]); err != nil {
				return nil, fmt.Errorf("%w: relay %d: %v", ErrRoute, i, err)
			}
		}
	}

	// The filler: what the shifts of relays 0..n-2 bring into the end of
	// the last relay's routing section.
	filler := make([]byte, 0, (n-1)*SlotSize)
	for i := 0; i < n-1; i++ {
		filler = append(filler, make([]byte, SlotSize)...)
		ks := make([]byte, routingSize+SlotSize)
		stream(&keys[i].rho, ks)
		start := routingSize - i*SlotSize
		for j := range filler {
			filler[j] ^= ks[start+j]
		}
	}

	// Payload layers, innermost (the exit's) first.
	payloads := make([][]byte, n)
	p := inner(keys)
	for i := n - 1; i >= 0; i-- {
		stream(&keys[i].pi, p)
		payloads[i] = append([]byte(nil), p...)
	}

	// Routing sections and MACs, from the exit back to the first relay.
	pkt := make([]byte, Size)
	pkt[0] = Version
	beta := make([]byte, routingSize)
	if _, err := io.ReadFull(rnd, beta); err != nil {
		return nil, fmt.Errorf("onion padding: %w", err)
	}
	var nextMAC []byte
	for i := n - 1; i >= 0; i-- {
		slot := make([]byte, SlotSize)
		if i == n-1 {
			slot[0] = byte(last)
		} else {
			slot[0] = byte(Forward)
			copy(slot[slotNext:], route[i+1].Node[:])
			binary.BigEndian.PutUint32(slot[slotEpoch:], route[i+1].Epoch)
			copy(slot[slotMAC:], nextMAC)
		}
		copy(slot[slotData:], route[i].Data[:])
		// Shift right by a slot, this hop's slot in front.
		copy(beta[SlotSize:], beta[:routingSize-SlotSize])
		copy(beta, slot)
		ks := make([]byte, routingSize)
		stream(&keys[i].rho, ks)
		for j := range beta {
			beta[j] ^= ks[j]
		}
		if i == n-1 {
			copy(beta[routingSize-len(filler):], filler)
		}
		binary.BigEndian.PutUint32(pkt[offEpoch:], route[i].Epoch)
		copy(pkt[offAlpha:], alphas[i].Bytes())
		copy(pkt[offRouting:], beta)
		copy(pkt[headerSize:], payloads[i])
		nextMAC = mac(&keys[i].mu, pkt)
	}
	copy(pkt[offMAC:], nextMAC)
	return pkt, nil
}

// Peel takes this relay's layer off pkt with its onion key for the
// packet's epoch (see Epoch). It checks the MAC before anything else and
// reads no byte of pkt after it returns.
func Peel(pkt []byte, key *ecdh.PrivateKey) (*Peeled, error) {
	if err := checkFrame(pkt); err != nil {
		return nil, err
	}
	if key == nil || key.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("peel: %w: no X25519 onion key", ErrKey)
	}
	alpha, err := ecdh.X25519().NewPublicKey(pkt[offAlpha:offRouting])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	dh, err := key.ECDH(alpha)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	k := derive(dh, alpha.Bytes())
	if !hmac.Equal(mac(&k.mu, pkt), pkt[offMAC:headerSize]) {
		return nil, ErrMAC
	}
	out := &Peeled{Tag: k.tag}
	// The routing section, one slot of zeros longer, decrypted.
	ext := make([]byte, routingSize+SlotSize)
	copy(ext, pkt[offRouting:offMAC])
	stream(&k.rho, ext)
	slot := ext[:SlotSize]
	out.Action = Action(slot[0])
	copy(out.Data[:], slot[slotData:])
	payload := append([]byte(nil), pkt[headerSize:]...)
	stream(&k.pi, payload)
	switch out.Action {
	case Exit, Deliver:
		out.Payload = payload
		return out, nil
	case Forward:
	default:
		return nil, fmt.Errorf("%w: %v", ErrSlot, out.Action)
	}
	copy(out.Next[:], slot[slotNext:slotEpoch])
	out.NextEpoch = binary.BigEndian.Uint32(slot[slotEpoch:])
	next, err := mul(k.blind[:], alpha)
	if err != nil {
		return nil, fmt.Errorf("%w: blinding: %v", ErrKey, err)
	}
	fwd := make([]byte, Size)
	fwd[0] = Version
	binary.BigEndian.PutUint32(fwd[offEpoch:], out.NextEpoch)
	copy(fwd[offAlpha:], next.Bytes())
	copy(fwd[offRouting:offMAC], ext[SlotSize:])
	copy(fwd[offMAC:], slot[slotMAC:slotData])
	copy(fwd[headerSize:], payload)
	out.Packet = fwd
	return out, nil
}
