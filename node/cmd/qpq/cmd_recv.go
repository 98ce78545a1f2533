package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
)

const recvAbout = `Fetch the messages a node holds for you, print them, and acknowledge
them (which deletes every copy in the mesh). Without --follow it prints what
is there now and exits 0, also when there is nothing; with --follow it keeps
waiting for new messages until interrupted. Each message is shown once,
however many copies reach you (the ids shown are remembered in the home dir).

It also shows the messages of the channels you joined (qpq channel), which
stay at the nodes for late joiners and are never acknowledged.

--json prints one object per line: id, kind ("dm" or "broadcast"), channel
(the local name, broadcasts only), from (the sender's fingerprint), text,
sent_at (RFC 3339, UTC; the sender's clock).

Examples:
  qpq recv --node 127.0.0.1:7443
  qpq recv --follow --json`

// recvJSON is one line of `qpq recv --json`.
type recvJSON struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Channel string `json:"channel,omitempty"` // the local name, for broadcasts
	From    string `json:"from"`
	Text    string `json:"text"`
	SentAt  string `json:"sent_at"`
}

func runRecv(env *cliEnv, args []string) int {
	fs := newFlags(env, "recv", "recv [--node ADDR[#FP]] [--home DIR] [--follow] [--json]", recvAbout)
	nodeFlag := fs.String("node", "", "node to fetch from, ADDR[#FINGERPRINT] [$QPQ_NODE]")
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	follow := fs.Bool("follow", false, "keep waiting for new messages")
	asJSON := fs.Bool("json", false, "one JSON object per message")
	repin := fs.Bool("repin", false, "accept and remember a changed node key")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	target, err := parseNode(*nodeFlag, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitUsage
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitUsage
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := recv(ctx, env, h, u, target, *repin, *follow, *asJSON); err != nil && ctx.Err() == nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func recv(ctx context.Context, env *cliEnv, h home.Home, u *e2e.User, t nodeTarget, repin, follow, asJSON bool) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	c, err := connect(cctx, env, h, t, repin)
	if err != nil {
		cancel()
		return err
	}
	defer c.Close()
	signed, err := signedBundle(h, u)
	if err != nil {
		cancel()
		return err
	}
	mb, err := c.Authenticate(cctx, u, signed)
	cancel()
	if err != nil {
		return err
	}
	defer mb.Release()
	seen, err := h.LoadSeen()
	if err != nil {
		return err
	}
	chans, err := h.Channels()
	if err != nil {
		return err
	}
	var mu sync.Mutex // guards seen and the output between the two loops
	cr := &channelReader{env: env, h: h, c: c, chans: chans, seen: seen, mu: &mu, asJSON: asJSON, after: make([]gossip.ID, len(chans))}
	if follow && len(chans) > 0 {
		errc := make(chan error, 1)
		go func() { errc <- cr.loop(ctx, true) }()
		defer func() {
			c.Close() // unblocks the channel loop's long poll
			<-errc
		}()
	}
	for {
		wait := time.Duration(0)
		if follow {
			wait = time.Minute
		}
		fctx, cancel := context.WithTimeout(ctx, wait+connectTimeout)
		envs, err := mb.Fetch(fctx, 256, wait)
		cancel()
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		mu.Lock()
		acked, err := show(ctx, env, h, u, mb, seen, envs, asJSON)
		mu.Unlock()
		if err != nil {
			return err
		}
		// Messages that cannot be opened stay at the node until their TTL
		// ends; do not spin on them.
		stuck := len(envs) > 0 && acked == 0
		if !follow && (len(envs) == 0 || stuck) {
			return cr.loop(ctx, false)
		}
		if stuck {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// show opens, prints and acknowledges a batch; ids already shown are only
// acknowledged again.
func show(ctx context.Context, env *cliEnv, h home.Home, u *e2e.User, mb *client.Mailbox, seen *home.Seen, envs []gossip.Envelope, asJSON bool) (acked int, err error) {
	var secrets [][]byte
	for _, e := range envs {
		id := e.ID.String()
		m, err := e2e.OpenDM(u, e.Payload)
		if err != nil {
			if !seen.Has("bad " + id) {
				fmt.Fprintf(env.stderr, "qpq recv: message %s could not be opened, skipped: %v\n", id, err)
				seen.Add("bad " + id)
			}
			continue
		}
		if !seen.Has(id) {
			if asJSON {
				json.NewEncoder(env.stdout).Encode(recvJSON{ID: id, Kind: "dm", From: m.From.String(), Text: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339)})
			} else {
				from := h.NameOf(m.From)
				if from == "" {
					from = m.From.Short()
				}
				fmt.Fprintf(env.stdout, "%s  %s: %s\n", m.SentAt.Local().Format("2006-01-02 15:04"), from, m.Body)
			}
			seen.Add(id)
		}
		secrets = append(secrets, append([]byte(nil), m.ReceiptSecret[:]...))
	}
	// Remember before acknowledging: a crash in between shows nothing twice.
	if err := seen.Save(); err != nil {
		return 0, err
	}
	if len(secrets) == 0 {
		return 0, nil
	}
	actx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if _, err := mb.Ack(actx, secrets); err != nil {
		return 0, fmt.Errorf("acknowledge: %w", err)
	}
	return len(secrets), nil
}

// channelReader fetches, opens and prints the user's channel messages.
type channelReader struct {
	env    *cliEnv
	h      home.Home
	c      *client.Client
	chans  []home.Channel
	seen   *home.Seen
	mu     *sync.Mutex
	asJSON bool
	after  []gossip.ID // per channel: the newest envelope fetched
}

// loop fetches until nothing new arrives, or with follow until ctx ends.
func (r *channelReader) loop(ctx context.Context, follow bool) error {
	if len(r.chans) == 0 {
		return nil
	}
	ids := make([][32]byte, len(r.chans))
	for i, ch := range r.chans {
		ids[i] = ch.Key.ID()
	}
	for ctx.Err() == nil {
		wait := time.Duration(0)
		if follow {
			wait = time.Minute
		}
		fctx, cancel := context.WithTimeout(ctx, wait+connectTimeout)
		envs, err := r.c.ChannelFetch(fctx, ids, r.after, 256, wait)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("channel fetch: %w", err)
		}
		r.mu.Lock()
		err = r.show(ids, envs)
		r.mu.Unlock()
		if err != nil {
			return err
		}
		if !follow && len(envs) == 0 {
			return nil
		}
	}
	return nil
}

func (r *channelReader) show(ids [][32]byte, envs []gossip.Envelope) error {
	for _, e := range envs {
		idx := -1
		for i, id := range ids {
			if string(id[:]) == string(e.Destination) {
				idx = i
			}
		}
		if idx < 0 {
			continue
		}
		r.after[idx] = e.ID
		id := e.ID.String()
		if r.seen.Has(id) || r.seen.Has("bad "+id) {
			continue
		}
		m, err := e2e.OpenChannel(r.chans[idx].Key, e.Payload)
		if err != nil {
			fmt.Fprintf(r.env.stderr, "qpq recv: channel message %s in %q could not be opened, skipped: %v\n", id, r.chans[idx].Name, err)
			r.seen.Add("bad " + id)
			continue
		}
		if r.asJSON {
			json.NewEncoder(r.env.stdout).Encode(recvJSON{ID: id, Kind: "broadcast", Channel: r.chans[idx].Name, From: m.From.String(), Text: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339)})
		} else {
			from := r.h.NameOf(m.From)
			if from == "" {
				from = m.From.Short()
			}
			fmt.Fprintf(r.env.stdout, "%s  #%s %s: %s\n", m.SentAt.Local().Format("2006-01-02 15:04"), r.chans[idx].Name, from, m.Body)
		}
		r.seen.Add(id)
	}
	return r.seen.Save()
}
