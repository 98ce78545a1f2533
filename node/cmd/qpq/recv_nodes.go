package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/client/find"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/home"
)

// errNoNodeFound is the whole message when neither a node is given nor
// one is found; the command exits 2 with it.
var errNoNodeFound = errors.New("no node given (--node or QPQ_NODE) and none found by mDNS on this machine's links")

// errMDNSOff is the message when no node is given and mDNS is turned off.
var errMDNSOff = errors.New("no node given (--node or QPQ_NODE) and mDNS is off (--mdns=false or QPQ_MDNS=false)")

// findTimeout bounds the mDNS browse and RTT measurements of a client
// that was given no node.
const findTimeout = 5 * time.Second

// nodePlan is the nodes a client session may use and how it treats them.
type nodePlan struct {
	cands []client.Candidate
	// provider, when set, replaces cands after the first connection:
	// found again by mDNS on each move, then the remembered nodes.
	provider func(context.Context) []client.Candidate
	given    bool // named by --node or QPQ_NODE (else found by mDNS)
	trustNew bool // accept nodes found by mDNS that are not trusted yet
}

// planNodes turns --node / QPQ_NODE (one or more ADDR[#FP], comma
// separated) into candidates; with follow, the remembered nodes follow
// as fallbacks. Without either it browses by mDNS and orders what it
// finds trusted first, then by RTT. A usage problem is a usageError.
func planNodes(ctx context.Context, env *cliEnv, h home.Home, flagValue string, follow, trustNew, mdns bool) (nodePlan, error) {
	v, src := flagValue, "--node"
	if v == "" {
		v, src = env.getenv("QPQ_NODE"), "QPQ_NODE"
	}
	p := nodePlan{trustNew: trustNew}
	if v != "" {
		p.given = true
		for _, one := range strings.Split(v, ",") {
			c, err := client.ParseCandidate(one)
			if err != nil {
				return nodePlan{}, usageError{fmt.Errorf("%s: %v", src, err)}
			}
			p.cands = append(p.cands, c)
		}
		if follow {
			p.cands = appendRemembered(h, p.cands)
		}
		return p, nil
	}
	if !mdns {
		return nodePlan{}, usageError{errMDNSOff}
	}
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	ns, err := find.Peers(fctx, find.Config{Trusted: h.TrustsNode})
	if err != nil {
		return nodePlan{}, fmt.Errorf("find a node: %w", err)
	}
	p.cands = find.Candidates(ns)
	if len(p.cands) == 0 {
		return nodePlan{}, usageError{errNoNodeFound}
	}
	for _, n := range ns {
		if n.Err == nil {
			fmt.Fprintf(env.stderr, "found node %s (%s) by mDNS on %s, RTT %s%s\n", n.Addr, n.FP.Short(), n.Iface, n.RTT.Round(100*time.Microsecond), map[bool]string{true: ", trusted", false: ", not trusted yet"}[n.Trusted])
		}
	}
	if follow {
		p.cands = appendRemembered(h, p.cands)
		remembered := func() []client.Candidate { return appendRemembered(h, nil) }
		p.provider = find.Provider(find.Config{Trusted: h.TrustsNode}, 0, nil, remembered, p.cands)
	}
	return p, nil
}

// usageError marks planNodes errors that exit 2.
type usageError struct{ error }

// appendRemembered adds the nodes trusted earlier, pinned, after cands.
func appendRemembered(h home.Home, cands []client.Candidate) []client.Candidate {
	known, _ := h.Nodes()
	for _, k := range known {
		dup := false
		for _, c := range cands {
			dup = dup || c.Addr == k.Addr || c.Pin == k.Fingerprint
		}
		if !dup {
			cands = append(cands, client.Candidate{Addr: k.Addr, Pin: k.Fingerprint, Trusted: true, Name: "remembered"})
		}
	}
	return cands
}

// dial dials a candidate: a trusted one as connect does (the remembered
// key, trust on first use for a named node, --repin), an untrusted one
// pinned to its announced key (Trust decides, then remembers).
func (p nodePlan) dial(env *cliEnv, h home.Home, repin bool) func(context.Context, client.Candidate) (*client.Client, error) {
	return func(ctx context.Context, c client.Candidate) (*client.Client, error) {
		if c.Trusted {
			return connect(ctx, env, h, nodeTarget{addr: c.Addr, pin: c.Pin}, repin && p.given)
		}
		cl, err := client.Dial(ctx, c.Addr, c.Pin)
		if err != nil {
			return nil, fmt.Errorf("connect to node %s: %w", c.Addr, err)
		}
		return cl, nil
	}
}

// trust decides about a node found by mDNS that the user does not trust
// yet: --trust-new accepts it, a terminal on stdin asks, anything else
// refuses (a script must not authenticate to whoever announces a node on
// the Wi-Fi). An accepted node is remembered.
func (p nodePlan) trust(env *cliEnv, h home.Home, cmd string) func(context.Context, client.Candidate, identity.Fingerprint) error {
	return func(ctx context.Context, c client.Candidate, fp identity.Fingerprint) error {
		switch {
		case p.trustNew:
			fmt.Fprintf(env.stderr, "qpq %s: trusting node %s found by mDNS on first use (--trust-new): %s (remembered in %s)\n", cmd, c.Addr, fp.Short(), h.Path(home.NodesFile))
		case stdinIsTerminal():
			fmt.Fprintf(env.stderr, "qpq %s: node %s (%s, %s) was found by mDNS and is new; anyone on this network can announce a node.\nTrust it and open your mailbox there? [y/N] ", cmd, c.Addr, fp.Short(), display.Escape(c.Name))
			line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
				return fmt.Errorf("%w: you declined", client.ErrNotTrusted)
			}
		default:
			return fmt.Errorf("%w: it was found by mDNS and is new; run with --trust-new to trust it, or name a node with --node ADDR#FINGERPRINT", client.ErrNotTrusted)
		}
		return h.RememberNode(c.Addr, fp)
	}
}

// mdnsDefault is the default of a client's --mdns: $QPQ_MDNS, else on.
func mdnsDefault(env *cliEnv) (bool, error) {
	v := env.getenv("QPQ_MDNS")
	if v == "" {
		return true, nil
	}
	b, err := config.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("QPQ_MDNS %q: %w", v, err)
	}
	return b, nil
}

// attemptTimeout bounds one dial and authentication: with other nodes to
// move to, a silent node is given up sooner.
func attemptTimeout(candidates int) time.Duration {
	if candidates > 1 {
		return 3 * time.Second
	}
	return connectTimeout
}
