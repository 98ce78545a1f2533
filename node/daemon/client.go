package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// clientIdle closes a client connection that never opens its RPC stream.
	clientIdle = 30 * time.Second
	// maxFetch bounds envelopes returned by one fetch, fetchBytes their
	// payloads (under the RPC message bound).
	maxFetch   = 256
	fetchBytes = 128 << 10
	// maxWait bounds a fetch's long poll.
	maxWait = 5 * time.Minute
	// maxAckSecrets bounds one ack call.
	maxAckSecrets = 1024
)

// nodeService is the Node capability a client gets (ALPN "capnp").
type nodeService struct{ d *Daemon }

func (s nodeService) Hello(ctx context.Context, call schemas.Node_hello) error {
	h, err := call.Args().Hello()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return link.AnswerHello(s.d.hello, h, res.NewHello)
}

// healthDelay is a test hook, read only when QPQ_TEST_HEALTH_DELAY is set
// (a duration): every health answer waits that long, so a namespace test
// can make one node measure farther away than another (the test kernel
// has no sch_netem). Never set it otherwise.
var healthDelay, _ = time.ParseDuration(os.Getenv("QPQ_TEST_HEALTH_DELAY"))

func (s nodeService) Health(ctx context.Context, call schemas.Node_health) error {
	if healthDelay > 0 {
		select {
		case <-time.After(healthDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	h, err := res.NewHealth()
	if err != nil {
		return err
	}
	up, n := s.d.stats()
	h.SetUptimeSeconds(uint64(up / time.Second))
	h.SetLinks(uint32(n))
	return nil
}

func (d *Daemon) serveClient(c *clientConn) {
	conn := c.in
	ctx, cancel := context.WithTimeout(d.ctx, clientIdle)
	// Quotas count per client address (IPv6: per /64), not per
	// connection, so opening more connections buys no more room.
	sess := &clientSession{d: d, conn: conn, cc: c, label: c.key}
	rc, err := conn.ServeLimited(ctx, capnp.Client(schemas.Node_ServerToClient(sess)), d.log, d.clients.callLimits(c))
	cancel()
	if err != nil {
		conn.Refuse("no RPC stream")
		d.log.Debug("client gave up before RPC", "addr", conn.RemoteAddr(), "err", err)
		return
	}
	t := time.NewTicker(max(clientIdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	reason := ""
wait:
	for {
		select {
		case <-rc.Done():
			break wait
		case <-conn.Done():
			break wait
		case <-d.ctx.Done():
			break wait
		case now := <-t.C:
			if c.idle(now) >= clientIdleTimeout {
				reason = "idle"
				d.log.Debug("closing idle client", "addr", conn.RemoteAddr())
				break wait
			}
		}
	}
	rc.Close()
	conn.Close(link.CodeClosing, reason)
}

// clientSession is the Node service for one client connection: it holds
// the challenge it issued, bound to this TLS session.
type clientSession struct {
	d     *Daemon
	conn  *link.Incoming
	cc    *clientConn
	label string // per-connection quota key; kept in memory only

	mu    sync.Mutex // guards nonce
	nonce []byte
}

func (s *clientSession) Hello(ctx context.Context, call schemas.Node_hello) error {
	defer s.cc.begin()()
	return nodeService{s.d}.Hello(ctx, call)
}

func (s *clientSession) Health(ctx context.Context, call schemas.Node_health) error {
	defer s.cc.begin()()
	return nodeService{s.d}.Health(ctx, call)
}

func (s *clientSession) Enqueue(ctx context.Context, call schemas.Node_enqueue) error {
	defer s.cc.begin()()
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
	added, err := s.d.enqueueLocal(env, s.label)
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

// SendOnion takes an onion packet for the client's first relay; like
// enqueue it needs no authentication.
func (s *clientSession) SendOnion(ctx context.Context, call schemas.Node_sendOnion) error {
	defer s.cc.begin()()
	first, err := call.Args().First()
	if err != nil || len(first) != len(identity.Fingerprint{}) {
		return fmt.Errorf("send onion: first relay is %d bytes, want a %d-byte node fingerprint", len(first), len(identity.Fingerprint{}))
	}
	pkt, err := call.Args().Packet()
	if err != nil || len(pkt) != onion.Size {
		return fmt.Errorf("send onion: packet of %d bytes, want %d", len(pkt), onion.Size)
	}
	rid, _ := call.Args().ReplyId()
	var done <-chan struct{}
	if len(rid) > 0 {
		if len(rid) != onion.ReplyIDSize {
			return fmt.Errorf("send onion: reply id of %d bytes, want %d", len(rid), onion.ReplyIDSize)
		}
		ch, stop, err := s.d.onion.await([onion.ReplyIDSize]byte(rid))
		if err != nil {
			return err
		}
		defer stop()
		done = ch
	}
	if err := s.d.onion.enter(identity.Fingerprint(first), append([]byte(nil), pkt...)); err != nil {
		return err
	}
	if done == nil {
		return nil
	}
	wait := time.Duration(min(call.Args().WaitMs(), maxOnionWaitMs)) * time.Millisecond
	call.Go() // let other calls on this connection (health probes) proceed while we wait
	t := time.NewTimer(wait)
	defer t.Stop()
	acked := false
	select {
	case <-done:
		acked = true
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.d.ctx.Done():
		return errors.New("send onion: node shutting down")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetAcked(acked)
	return nil
}

// maxOnionWaitMs caps how long a sendOnion call waits for its reply.
const maxOnionWaitMs = 60_000

// Descriptors returns a random sample of the onion relays' descriptors
// this node holds.
func (s *clientSession) Descriptors(ctx context.Context, call schemas.Node_descriptors) error {
	defer s.cc.begin()()
	n := int(min(call.Args().Limit(), maxDescriptorSample))
	if n == 0 {
		n = maxDescriptorSample
	}
	descs := s.d.onion.sample(n)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewDescriptors(int32(len(descs)))
	if err != nil {
		return err
	}
	for i, b := range descs {
		if err := l.Set(i, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *clientSession) Challenge(ctx context.Context, call schemas.Node_challenge) error {
	defer s.cc.begin()()
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
	defer s.cc.begin()()
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
	exp, err := s.conn.Exporter()
	if err != nil {
		return err
	}
	msg := link.AuthMessage(link.PurposeMailbox, s.d.id.Fingerprint(), exp, nonce)
	if !e2e.VerifyPurpose(b.Identity, link.AuthSigLabel, msg, sig) {
		return fmt.Errorf("%w: signature does not match this node and session", ErrAuth)
	}
	if err := s.d.publish(signed, b.Fingerprint, s.label); err != nil {
		s.d.log.Debug("bundle not published", "user", b.Fingerprint, "err", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s.d.place.sawUser(b.Fingerprint)
	return res.SetMailbox(schemas.Mailbox_ServerToClient(&mailbox{d: s.d, cc: s.cc, label: s.label, user: b.Fingerprint}))
}

func (s *clientSession) PublishBundle(ctx context.Context, call schemas.Node_publishBundle) error {
	defer s.cc.begin()()
	signed, err := call.Args().Bundle()
	if err != nil {
		return fmt.Errorf("publishBundle: %w", err)
	}
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return fmt.Errorf("publishBundle: %w", err)
	}
	return s.d.publish(signed, b.Fingerprint, s.label)
}

func (s *clientSession) LookupBundle(ctx context.Context, call schemas.Node_lookupBundle) error {
	defer s.cc.begin()()
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

// publish stores a verified bundle as an envelope and spreads it. It is
// charged to the client address that handed it over (label), so bundles
// of made-up users fill only that address's share of the bundle budget.
func (d *Daemon) publish(signed []byte, fp identity.Fingerprint, label string) error {
	env, err := gossip.NewBundleEnvelope(fp, signed, uint32(bundleTTL/time.Second), uint8(d.cfg.MaxHops))
	if err != nil {
		return err
	}
	_, err = d.eng.Accept(env, relay.Source{Client: label})
	return err
}

// mailbox is one authenticated user's Mailbox capability.
type mailbox struct {
	d     *Daemon
	cc    *clientConn
	label string // the client's quota key, as in clientSession
	user  identity.Fingerprint
}

func (m *mailbox) Fetch(ctx context.Context, call schemas.Mailbox_fetch) error {
	defer m.cc.begin()()
	if m.d.clients.busy() {
		return fmt.Errorf("fetch: %w", errBusy)
	}
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
		done, err := m.cc.startWait()
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		defer done()
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
	defer m.cc.begin()()
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
	n, err := m.d.eng.Ack(secrets, relay.Source{Client: m.label})
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
	defer s.cc.begin()()
	if s.d.clients.busy() {
		return fmt.Errorf("channelFetch: %w", errBusy)
	}
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
		done, err := s.cc.startWait()
		if err != nil {
			return fmt.Errorf("channelFetch: %w", err)
		}
		defer done()
		call.Go()
		t := time.NewTimer(wait)
		defer t.Stop()
		waitAny(wake, t.C, ctx.Done(), s.d.ctx.Done())
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

// waitAny returns when any of wake, timer or done is ready: one wait
// for many channels, in the caller's goroutine (none per channel).
func waitAny(wake []<-chan struct{}, timer <-chan time.Time, done ...<-chan struct{}) {
	cases := make([]reflect.SelectCase, 0, len(wake)+1+len(done))
	for _, ch := range wake {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer)})
	for _, ch := range done {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	reflect.Select(cases)
}
