package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/signal"
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

--json prints one object per line: id, kind ("dm"), from (the sender's
fingerprint), text, sent_at (RFC 3339, UTC; the sender's clock).

Examples:
  qpq recv --node 127.0.0.1:7443
  qpq recv --follow --json`

// recvJSON is one line of `qpq recv --json`.
type recvJSON struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	From   string `json:"from"`
	Text   string `json:"text"`
	SentAt string `json:"sent_at"`
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
		acked, err := show(ctx, env, h, u, mb, seen, envs, asJSON)
		if err != nil {
			return err
		}
		// Messages that cannot be opened stay at the node until their TTL
		// ends; do not spin on them.
		stuck := len(envs) > 0 && acked == 0
		if !follow && (len(envs) == 0 || stuck) {
			return nil
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
