package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/schemas"
)

// Message defaults (DESIGN "Broadcast channels" lists them).
const (
	defaultDMHops      = 16
	maxDMHops          = 32
	defaultChannelHops = 3
	maxChannelHops     = 7
)

const sendAbout = `Seal a direct message to one person and hand it to a node, which carries
it hop by hop and holds it until they connect. The message is end-to-end
encrypted (X25519 + ML-KEM-768) to the recipient's published key bundle; the
node sees neither the text nor who sent it. Exits 0 once the node has stored
it and prints the message id (the same id qpq recv shows).

With --channel NAME it posts to a channel instead (TTL 6h and 3 hops by
default, at most 7); every member's qpq recv shows it.

The body comes from --text, else from standard input (at most 16 KiB).
--to takes a contact name, a full fingerprint, or a unique prefix of a
contact's fingerprint. The recipient must have connected to the mesh once
(qpq recv) so that their key bundle is known.

Examples:
  qpq send --node 127.0.0.1:7443 --to bob --text "meet at the water tower"
  echo "status: ok" | QPQ_NODE=127.0.0.1:7443 qpq send --to 4xq7 --ttl 2d --hops 8`

func runSend(env *cliEnv, args []string) int {
	fs := newFlags(env, "send", "send [--node ADDR[#FP]] [--home DIR] --to WHO | --channel NAME [--ttl DURATION] [--hops N] [--text TEXT] [--json]", sendAbout)
	nodeFlag := fs.String("node", "", "node to hand the message to, ADDR[#FINGERPRINT] [$QPQ_NODE]")
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	to := fs.String("to", "", "recipient: contact name, fingerprint, or unique prefix of a contact's fingerprint")
	channel := fs.String("channel", "", "post to this channel (a name from qpq channel list) instead of --to")
	text := fs.String("text", "", "message text (default: read standard input)")
	ttlFlag := fs.String("ttl", "", "how long the mesh keeps trying, e.g. 6h, 2d (default 7d; 6h for --channel)")
	hopsFlag := fs.String("hops", "", fmt.Sprintf("most node-to-node forwards (default %d, at most %d; --channel: default 3, at most 7)", defaultDMHops, maxDMHops))
	repin := fs.Bool("repin", false, "accept and remember a changed node key")
	asJSON := fs.Bool("json", false, "print {\"id\": ...}")
	textGiven := false
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	fs.Visit(func(f *flag.Flag) { textGiven = textGiven || f.Name == "text" })
	if (*to == "") == (*channel == "") {
		fmt.Fprintln(env.stderr, "qpq send: give exactly one of --to and --channel")
		return exitUsage
	}
	ttlDefault, hopsDefault, hopsMax := "7d", defaultDMHops, maxDMHops
	if *channel != "" {
		ttlDefault, hopsDefault, hopsMax = "6h", defaultChannelHops, maxChannelHops
	}
	if *ttlFlag == "" {
		*ttlFlag = ttlDefault
	}
	if *hopsFlag == "" {
		*hopsFlag = strconv.Itoa(hopsDefault)
	}
	ttl, err := config.ParseDuration(*ttlFlag)
	if err != nil || ttl < time.Second || ttl > 90*24*time.Hour {
		fmt.Fprintf(env.stderr, "qpq send: --ttl %q: want a duration from 1s to 90d, e.g. 6h or 7d\n", *ttlFlag)
		return exitUsage
	}
	hops, err := strconv.Atoi(*hopsFlag)
	if err != nil || hops < 0 || hops > hopsMax {
		fmt.Fprintf(env.stderr, "qpq send: --hops %q: want a whole number from 0 to %d\n", *hopsFlag, hopsMax)
		return exitUsage
	}
	target, err := parseNode(*nodeFlag, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitUsage
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitUsage
	}
	if err := requireIdentity(h); err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	var toFP [32]byte
	var ch home.Channel
	if *channel != "" {
		if ch, err = h.ChannelByName(*channel); err != nil {
			fmt.Fprintf(env.stderr, "qpq send: --channel: %v\n", err)
			return exitUsage
		}
	} else if toFP, _, err = h.ResolveRecipient(*to); err != nil {
		fmt.Fprintf(env.stderr, "qpq send: --to: %v\n", err)
		if errors.Is(err, home.ErrIdentityChanged) { // refused until accepted: not a usage error
			return exitFailure
		}
		return exitUsage
	}
	body := []byte(*text)
	if !textGiven {
		body, err = io.ReadAll(io.LimitReader(env.stdin, gossip.MaxBody+1))
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq send: read standard input: %v\n", err)
			return exitFailure
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if textGiven {
			fmt.Fprintln(env.stderr, "qpq send: --text is empty: there is nothing to send")
			return exitUsage
		}
		fmt.Fprintln(env.stderr, "qpq send: standard input was empty: there is nothing to send (give --text TEXT or pipe the text in)")
		return exitFailure
	}
	if len(body) > gossip.MaxBody {
		fmt.Fprintf(env.stderr, "qpq send: the message is over %d bytes (16 KiB), the most one message carries; split it\n", gossip.MaxBody)
		return exitFailure
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	var id gossip.ID
	if *channel != "" {
		id, err = sendChannel(env, h, u, target, *repin, ch, body, ttl, uint8(hops))
	} else {
		id, err = send(env, h, u, target, *repin, toFP, body, ttl, uint8(hops))
	}
	if err != nil {
		// The node's own words are inside: shown escaped, like a message.
		fmt.Fprintf(env.stderr, "qpq send: %s\n", display.Escape(err.Error()))
		return exitFailure
	}
	if *asJSON {
		return writeJSON(env, "send", sendJSON{ID: id.String()})
	}
	fmt.Fprintln(env.stdout, id)
	return exitOK
}

func send(env *cliEnv, h home.Home, u *e2e.User, t nodeTarget, repin bool, to [32]byte, body []byte, ttl time.Duration, hops uint8) (gossip.ID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	c, err := connect(ctx, env, h, t, repin)
	if err != nil {
		return gossip.ID{}, err
	}
	defer c.Close()
	signed, err := signedBundle(h, u)
	if err != nil {
		return gossip.ID{}, err
	}
	if err := c.PublishBundle(ctx, signed); err != nil {
		return gossip.ID{}, fmt.Errorf("publish your key bundle: %w", err)
	}
	b, err := c.LookupBundle(ctx, to)
	if err != nil {
		return gossip.ID{}, fmt.Errorf("%w: the recipient must connect once (qpq recv) before they can be written to", err)
	}
	sealed, err := e2e.SealDM(u, b, body, time.Now())
	if errors.Is(err, e2e.ErrBodyTooLarge) {
		return gossip.ID{}, err
	} else if err != nil {
		return gossip.ID{}, fmt.Errorf("seal: %w", err)
	}
	env2 := gossip.Envelope{
		Kind:        schemas.Envelope_Kind_dm,
		Destination: append([]byte(nil), to[:]...),
		TTLSeconds:  uint32(ttl / time.Second),
		HopLimit:    hops,
		ReceiptTag:  append([]byte(nil), sealed.ReceiptTag[:]...),
		Payload:     sealed.Payload,
	}
	env2.ID = gossip.ComputeID(env2.Kind, env2.Destination, env2.ReceiptTag, env2.Payload)
	if _, err := c.Enqueue(ctx, env2); err != nil {
		return gossip.ID{}, fmt.Errorf("node refused the message: %w", err)
	}
	return env2.ID, nil
}

// sendChannel seals a channel message and hands it to the node; relays
// spread it to every neighbour once.
func sendChannel(env *cliEnv, h home.Home, u *e2e.User, t nodeTarget, repin bool, ch home.Channel, body []byte, ttl time.Duration, hops uint8) (gossip.ID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	c, err := connect(ctx, env, h, t, repin)
	if err != nil {
		return gossip.ID{}, err
	}
	defer c.Close()
	payload, err := e2e.SealChannel(u, ch.Key, body, time.Now())
	if err != nil {
		return gossip.ID{}, fmt.Errorf("seal: %w", err)
	}
	id := ch.Key.ID()
	e := gossip.Envelope{Kind: schemas.Envelope_Kind_broadcast, Destination: id[:], TTLSeconds: uint32(ttl / time.Second), HopLimit: hops, Payload: payload}
	e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
	if _, err := c.Enqueue(ctx, e); err != nil {
		return gossip.ID{}, fmt.Errorf("node refused the message: %w", err)
	}
	return e.ID, nil
}
