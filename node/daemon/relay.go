package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// summaryInterval paces anti-entropy while a link is up.
	summaryInterval = time.Minute
	// purgeInterval paces removal of expired envelopes and tombstones.
	purgeInterval = time.Minute
	// maxFetch bounds envelopes returned by one fetch, fetchBytes their
	// payloads (under the RPC message bound).
	maxFetch   = 256
	fetchBytes = 128 << 10
	// maxWait bounds a fetch's long poll.
	maxWait = 5 * time.Minute
	// maxAckSecrets bounds one ack call.
	maxAckSecrets = 1024
	// maxPushBatch bounds one push call's envelopes.
	maxPushBatch = 256
)

// verifyBundle adapts e2e.VerifyBundle for the relay engine.
func verifyBundle(signed []byte) (identity.Fingerprint, uint64, error) {
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return identity.Fingerprint{}, 0, err
	}
	return b.Fingerprint, b.Sequence, nil
}

// linkPeer is the relay engine's view of a link: push, summary and raise
// calls on the neighbour's MeshPeer.
type linkPeer struct{ l *link.Link }

func (p linkPeer) Push(ctx context.Context, envs []gossip.Envelope) (int, error) {
	fut, release := p.l.Remote().Push(ctx, func(ps schemas.MeshPeer_push_Params) error {
		return gossip.ToCapnpList(envs, ps.NewEnvelopes)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, err
	}
	return int(res.Accepted()), nil
}

func (p linkPeer) Summary(ctx context.Context, s relay.Summary) error {
	fut, release := p.l.Remote().Summary(ctx, func(ps schemas.MeshPeer_summary_Params) error {
		sum, err := ps.NewSummary()
		if err != nil {
			return err
		}
		if err := sum.SetFilter(s.Filter); err != nil {
			return err
		}
		if err := sum.SetKey(s.Key); err != nil {
			return err
		}
		sum.SetCount(s.Count)
		return nil
	})
	defer release()
	_, err := fut.Struct()
	return err
}

// Raise sends a raise notice. A neighbour that predates raise answers
// unimplemented, which the engine is told as relay.ErrRaiseUnsupported.
func (p linkPeer) Raise(ctx context.Context, raises []relay.HopRaise) error {
	out := make([]link.HopRaise, len(raises))
	for i, r := range raises {
		out[i] = link.HopRaise{ID: r.ID, HopLimit: r.HopLimit}
	}
	err := p.l.Raise(ctx, out)
	if errors.Is(err, link.ErrNotServed) {
		return fmt.Errorf("%w: %v", relay.ErrRaiseUnsupported, err)
	}
	return err
}

// raiseHandler applies a neighbour's raise notice (link.PeerServer has
// checked its length and ids).
func (d *Daemon) raiseHandler(from identity.Fingerprint) func(context.Context, []link.HopRaise) error {
	return func(ctx context.Context, raises []link.HopRaise) error {
		rs := make([]relay.HopRaise, len(raises))
		for i, r := range raises {
			rs[i] = relay.HopRaise{ID: gossip.ID(r.ID), HopLimit: r.HopLimit}
		}
		if err := d.eng.HandleRaise(from, rs); err != nil {
			return fmt.Errorf("raise: %w", err)
		}
		return nil
	}
}

// pushHandler stores what a neighbour pushes.
func (d *Daemon) pushHandler(from identity.Fingerprint) func(context.Context, schemas.Envelope_List) (uint32, error) {
	return func(ctx context.Context, list schemas.Envelope_List) (uint32, error) {
		if list.Len() > maxPushBatch {
			return 0, fmt.Errorf("push of %d envelopes, at most %d", list.Len(), maxPushBatch)
		}
		var accepted uint32
		for i := 0; i < list.Len(); i++ {
			env, err := gossip.FromCapnp(list.At(i))
			if err != nil {
				d.log.Debug("dropped envelope from peer", "peer", from, "err", err)
				continue
			}
			added, err := d.eng.Accept(env, relay.Source{Peer: from})
			if errors.Is(err, relay.ErrRateLimited) {
				return accepted, err
			}
			if err != nil {
				d.log.Debug("refused envelope from peer", "peer", from, "id", env.ID, "err", err)
				continue
			}
			if added {
				accepted++
			}
		}
		return accepted, nil
	}
}

func (d *Daemon) summaryHandler(from identity.Fingerprint) func(context.Context, schemas.Summary) error {
	return func(ctx context.Context, s schemas.Summary) error {
		filter, err := s.Filter()
		if err != nil {
			return err
		}
		key, err := s.Key()
		if err != nil {
			return err
		}
		return d.eng.HandleSummary(from, relay.Summary{Filter: filter, Key: key, Count: s.Count()})
	}
}

// syncLink runs anti-entropy with one neighbour: at once, then
// periodically, until the link ends.
func (d *Daemon) syncLink(l *link.Link) {
	// A failed summary is retried soon (1 s, doubling): the neighbour may
	// not have registered the link yet when ours is up.
	retry := time.Second
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		err := d.eng.SendSummary(ctx, l.Peer())
		cancel()
		wait := summaryInterval
		if err != nil && d.ctx.Err() == nil {
			d.log.Debug("summary failed", "peer", l.Peer(), "err", err)
			if retry < summaryInterval {
				wait, retry = retry, retry*2
			}
		} else {
			retry = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.Done():
			t.Stop()
			return
		case <-d.ctx.Done():
			t.Stop()
			return
		}
	}
}

// purgeLoop removes expired envelopes and old tombstones.
func (d *Daemon) purgeLoop() {
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			exp, tomb, err := d.st.Purge()
			if err != nil {
				d.log.Error("purge failed", "err", err)
			} else if exp+tomb > 0 {
				d.log.Debug("purged", "expired", exp, "tombstones", tomb)
			}
			if n := d.eng.PruneBoosts(); n > 0 {
				d.log.Debug("forgot raised hop limits of broadcasts no longer held", "count", n)
			}
		case <-d.ctx.Done():
			return
		}
	}
}

// clientSession is the Node service for one client connection: it holds
// the challenge it issued, bound to this TLS session.
type clientSession struct {
	d     *Daemon
	conn  *quic.Conn
	label string // per-connection quota key; kept in memory only

	mu    sync.Mutex // guards nonce
	nonce []byte
}

func (s *clientSession) Hello(ctx context.Context, call schemas.Node_hello) error {
	return nodeService{s.d}.Hello(ctx, call)
}

func (s *clientSession) Health(ctx context.Context, call schemas.Node_health) error {
	return nodeService{s.d}.Health(ctx, call)
}

func (s *clientSession) Enqueue(ctx context.Context, call schemas.Node_enqueue) error {
	e, err := call.Args().Envelope()
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	env, err := gossip.FromCapnp(e)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	if env.Kind == schemas.Envelope_Kind_receipt {
		return errors.New("enqueue: receipts come from ack, not enqueue")
	}
	added, err := s.d.eng.Accept(env, relay.Source{Client: s.label})
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetStored(added)
	return nil
}

func (s *clientSession) Challenge(ctx context.Context, call schemas.Node_challenge) error {
	nonce := make([]byte, link.NonceLen)
	rand.Read(nonce)
	s.mu.Lock()
	s.nonce = nonce
	s.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetNonce(nonce)
}

// ErrAuth is returned for a failed authentication.
var ErrAuth = errors.New("authentication failed")

func (s *clientSession) Authenticate(ctx context.Context, call schemas.Node_authenticate) error {
	args := call.Args()
	signed, err := args.Bundle()
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	nonce, _ := args.Nonce()
	sig, _ := args.Signature()
	s.mu.Lock()
	want := s.nonce
	s.nonce = nil // one use
	s.mu.Unlock()
	if want == nil || string(nonce) != string(want) {
		return fmt.Errorf("%w: no such challenge (call challenge first, on this connection)", ErrAuth)
	}
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return fmt.Errorf("%w: bundle: %v", ErrAuth, err)
	}
	exp, err := link.Exporter(s.conn.ConnectionState().TLS)
	if err != nil {
		return err
	}
	msg := link.AuthMessage(link.PurposeMailbox, s.d.id.Fingerprint(), exp, nonce)
	if !e2e.VerifyPurpose(b.Identity, link.AuthSigLabel, msg, sig) {
		return fmt.Errorf("%w: signature does not match this node and session", ErrAuth)
	}
	if err := s.d.publish(signed, b.Fingerprint); err != nil {
		s.d.log.Debug("bundle not published", "user", b.Fingerprint, "err", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetMailbox(schemas.Mailbox_ServerToClient(&mailbox{d: s.d, user: b.Fingerprint}))
}

func (s *clientSession) PublishBundle(ctx context.Context, call schemas.Node_publishBundle) error {
	signed, err := call.Args().Bundle()
	if err != nil {
		return fmt.Errorf("publishBundle: %w", err)
	}
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return fmt.Errorf("publishBundle: %w", err)
	}
	return s.d.publish(signed, b.Fingerprint)
}

func (s *clientSession) LookupBundle(ctx context.Context, call schemas.Node_lookupBundle) error {
	raw, err := call.Args().Fingerprint()
	if err != nil || len(raw) != len(identity.Fingerprint{}) {
		return fmt.Errorf("lookupBundle: want a 32-byte fingerprint")
	}
	signed, err := s.d.eng.Bundle(identity.Fingerprint(raw))
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetBundle(signed)
}

// bundleTTL is how long a published bundle lives in the mesh.
const bundleTTL = 30 * 24 * time.Hour

// publish stores a verified bundle as an envelope and spreads it.
func (d *Daemon) publish(signed []byte, fp identity.Fingerprint) error {
	env, err := gossip.NewBundleEnvelope(fp, signed, uint32(bundleTTL/time.Second), uint8(d.cfg.MaxHops))
	if err != nil {
		return err
	}
	_, err = d.eng.Accept(env, relay.Source{Client: "local"})
	return err
}

// mailbox is one authenticated user's Mailbox capability.
type mailbox struct {
	d    *Daemon
	user identity.Fingerprint
}

func (m *mailbox) Fetch(ctx context.Context, call schemas.Mailbox_fetch) error {
	limit := int(call.Args().Limit())
	if limit <= 0 || limit > maxFetch {
		limit = maxFetch
	}
	wait := min(time.Duration(call.Args().WaitSeconds())*time.Second, maxWait)
	// Register before looking, so an arrival in between is not missed.
	ch, stop := m.d.eng.Wait(m.user[:])
	defer stop()
	envs, err := m.d.eng.Mailbox(m.user, limit, fetchBytes)
	if err != nil {
		return err
	}
	if len(envs) == 0 && wait > 0 {
		call.Go() // let other calls on this connection proceed while we wait
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.d.ctx.Done():
		}
		if envs, err = m.d.eng.Mailbox(m.user, limit, fetchBytes); err != nil {
			return err
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return gossip.ToCapnpList(envs, res.NewEnvelopes)
}

func (m *mailbox) Ack(ctx context.Context, call schemas.Mailbox_ack) error {
	list, err := call.Args().Secrets()
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if list.Len() > maxAckSecrets {
		return fmt.Errorf("ack: %d secrets, at most %d", list.Len(), maxAckSecrets)
	}
	secrets := make([][]byte, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		k, err := list.At(i)
		if err != nil || len(k) != gossip.SecretLen {
			return fmt.Errorf("ack: secret %d is not %d bytes", i, gossip.SecretLen)
		}
		secrets = append(secrets, append([]byte(nil), k...))
	}
	n, err := m.d.eng.Ack(secrets)
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetDeleted(uint32(n))
	return nil
}

// maxChannels bounds the channel ids of one channelFetch.
const maxChannels = 64

func (s *clientSession) ChannelFetch(ctx context.Context, call schemas.Node_channelFetch) error {
	list, err := call.Args().Channels()
	if err != nil {
		return fmt.Errorf("channelFetch: %w", err)
	}
	if list.Len() > maxChannels {
		return fmt.Errorf("channelFetch: %d channels, at most %d", list.Len(), maxChannels)
	}
	ids := make([][32]byte, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		b, err := list.At(i)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("channelFetch: channel id %d is not 32 bytes", i)
		}
		ids = append(ids, [32]byte(b))
	}
	afterList, _ := call.Args().After()
	after := make([]gossip.ID, len(ids))
	for i := 0; i < afterList.Len() && i < len(ids); i++ {
		if b, err := afterList.At(i); err == nil && len(b) == gossip.IDLen {
			after[i] = gossip.ID(b)
		}
	}
	limit := int(call.Args().Limit())
	if limit <= 0 || limit > maxFetch {
		limit = maxFetch
	}
	wait := min(time.Duration(call.Args().WaitSeconds())*time.Second, maxWait)
	var wake []<-chan struct{}
	for _, id := range ids {
		ch, stop := s.d.eng.Wait(id[:])
		defer stop()
		wake = append(wake, ch)
	}
	envs, err := s.d.eng.Channel(ids, after, limit, fetchBytes)
	if err != nil {
		return err
	}
	if len(envs) == 0 && wait > 0 && len(ids) > 0 {
		call.Go()
		any := make(chan struct{}, 1)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		for _, ch := range wake {
			go func() {
				select {
				case <-ch:
					select {
					case any <- struct{}{}:
					default:
					}
				case <-wctx.Done():
				}
			}()
		}
		select {
		case <-any:
		case <-wctx.Done():
		case <-s.d.ctx.Done():
		}
		cancel()
		if envs, err = s.d.eng.Channel(ids, after, limit, fetchBytes); err != nil {
			return err
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return gossip.ToCapnpList(envs, res.NewEnvelopes)
}
