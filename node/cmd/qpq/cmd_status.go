package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/control"
)

const statusAbout = `Ask the running node, over its control socket (DATA/qpq.sock unless
--control; with neither flag nor variable set it also tries the OpenWrt
service's /var/run/qpq/qpq.sock), for its fingerprint, listen address, uptime
linked peers (how each was found and why it is kept), its store's fill by
kind, and its broadcast seen-set. Exits 1 when no node answers.`

// jsonShape lists a struct's JSON keys as --json help shows them, nested
// objects in parentheses, lists marked [] and maps {}: derived from the
// type that is printed, so the help cannot fall behind it.
func jsonShape(t reflect.Type) string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		switch ft.Kind() {
		case reflect.Slice:
			name += "[]"
			ft = ft.Elem()
		case reflect.Map:
			name += "{}"
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			name += " (" + jsonShape(ft) + ")"
		}
		keys = append(keys, name)
	}
	return strings.Join(keys, ", ")
}

// routerSockets are where the OpenWrt init script puts the control socket: in a
// directory of the qpq user's own since 0.2, directly in /var/run before (a 0.1
// node still running).
var routerSockets = []string{"/var/run/qpq/qpq.sock", "/var/run/qpq.sock"}

// explicitControl reports whether the user named a socket or data dir.
func explicitControl(env *cliEnv, fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "control" || f.Name == "data" })
	return given || env.getenv("QPQ_CONTROL") != "" || env.getenv("QPQ_DATA") != ""
}

func runStatus(env *cliEnv, args []string) int {
	fs := newFlags(env, "status", "status [--data DIR] [--control PATH] [--json]", statusAbout)
	b := config.Bind(fs, "data", "control")
	asJSON := fs.Bool("json", false, "print one JSON object: "+jsonShape(reflect.TypeFor[control.Status]()))
	cfg, err := b.Parse(args, env.getenv)
	if code, ok := parseStatus(env, fs, err); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := control.QueryStatus(ctx, cfg.Control)
	if errors.Is(err, control.ErrNoNode) && !explicitControl(env, fs) {
		// The OpenWrt service keeps its socket in RAM (see openwrt/files/qpq.init).
		for _, sock := range routerSockets {
			if st2, err2 := control.QueryStatus(ctx, sock); err2 == nil {
				st, err = st2, nil
				break
			}
		}
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq status: %v (is `qpq node` running with this --data or --control?)\n", err)
		return exitFailure
	}
	if *asJSON {
		return writeJSON(env, "status", st)
	}
	w := env.stdout
	fmt.Fprintf(w, "fingerprint  %s\nshort code   %s\nversion      %s\nlisten       %s\nuptime       %s\n",
		st.Fingerprint, st.Short, st.Version, st.Listen, time.Duration(st.UptimeS)*time.Second)
	fmt.Fprintf(w, "store        %d envelopes, %d of %d bytes, %d tombstones (%s)\n",
		st.Store.Envelopes, st.Store.Bytes, st.Store.MaxBytes, st.Store.Tombstones, st.Store.Path)
	if st.Store.Damaged > 0 {
		fmt.Fprintf(w, "             %d damaged records removed (see the log)\n", st.Store.Damaged)
	}
	fmt.Fprintf(w, "handshakes   %d in progress, %d retries, %d refused\n",
		st.Handshakes.InProgress, st.Handshakes.Retries, st.Handshakes.Refused)
	if pl := st.Placement; pl.K > 0 {
		fmt.Fprintf(w, "placement    %d mailbox nodes per DM; %d of %d nodes eligible; %d held, %d boxed; %d placed, %d flooded, %d by fallback, %d pulled\n",
			pl.K, pl.Eligible, pl.Nodes, pl.Held, pl.Boxed, pl.Placed, pl.Flooded, pl.Fallbacks, pl.Pulled)
	} else {
		fmt.Fprintf(w, "placement    off (every DM floods); holding %d DMs for others\n", pl.Boxed)
	}
	if on := st.Onion; on.Relay {
		fmt.Fprintf(w, "onion        relaying, key epoch %d (%d keys); %d relays known; %d peeled, %d forwarded, %d by store and forward, %d exited, %d replies; refused %d replays, %d bad MACs, %d old keys; %d dropped\n",
			on.Epoch, on.Keys, on.Relays, on.Peeled, on.Forwarded, on.Stored, on.Exited, on.Replies, on.Replays, on.MACFailures, on.UnknownEpoch, on.Dropped)
	} else {
		fmt.Fprintf(w, "onion        not relaying; %d relays known; %d packets of this node's clients entered\n", on.Relays, on.Entered)
	}
	if l := st.Loops; l.Rate > 0 {
		fmt.Fprintf(w, "loops        %g a second round 3 relays; %d sent, %d returned, %d lost, %d not sent\n", l.Rate, l.Sent, l.Returned, l.Lost, l.Skipped)
	}
	c := st.Cells
	decoys := "decoys off"
	if c.DecoyRate > 0 {
		decoys = fmt.Sprintf("decoys %g cells/s per link", c.DecoyRate)
	}
	fmt.Fprintf(w, "cells        %s, %d links; sent %d real, %d cover, %d over the queue; received %d (%d cover), %d packets; dropped %d over rate, %d bad, %d incomplete\n",
		decoys, c.Links, c.SentReal, c.SentCover, c.QueueFull, c.Received, c.ReceivedCover, c.Packets, c.Limited, c.Bad, c.Abandoned)
	if c.Streamed > 0 || c.StreamSent > 0 || c.StreamReceived > 0 {
		fmt.Fprintf(w, "stream       messages in cells on %d links; %d cells sent, %d again, %d received; %d calls over the rate sent by RPC; %d broke\n",
			c.Streamed, c.StreamSent, c.StreamResent, c.StreamReceived, c.StreamOverflow, c.StreamDead)
	}
	fmt.Fprintf(w, "peers        %d\n", len(st.Peers))
	for _, p := range st.Peers {
		if p.Via == "bridge" {
			fmt.Fprintf(w, "  %s  %s %s via: bridge to island %s  rtt %6.2f ms  linked %s; %d envelopes crossed in, %d kept on their island, %d pushes slowed\n",
				p.Fingerprint, p.Addr, p.Direction, p.Island, p.RTTMs, time.Duration(p.LinkedS)*time.Second, p.Crossed, p.Held, p.Slowed)
			continue
		}
		via := p.Via
		if p.Pick != "" {
			via += "/" + p.Pick
		}
		fmt.Fprintf(w, "  %s  %-22s %-8s %-15s rtt %6.2f ms  linked %s\n",
			p.Fingerprint, p.Addr, p.Direction, via, p.RTTMs, time.Duration(p.LinkedS)*time.Second)
	}
	return exitOK
}
