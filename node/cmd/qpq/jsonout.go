package main

import (
	"encoding/json"
	"fmt"
)

// idJSON is what `qpq id --json` and `qpq node id --json` print.
type idJSON struct {
	Fingerprint string `json:"fingerprint"`
	Short       string `json:"short"`
}

// writeJSON prints v as one JSON line on stdout. A failed write (a closed
// pipe, a full disk) is a failure the caller must see, not a silent
// truncation: it returns exitFailure after saying so on stderr.
func writeJSON(env *cliEnv, cmd string, v any) int {
	if err := json.NewEncoder(env.stdout).Encode(v); err != nil {
		fmt.Fprintf(env.stderr, "qpq %s: write JSON: %v\n", cmd, err)
		return exitFailure
	}
	return exitOK
}

// contactJSON is one line of `qpq contact list --json`.
type contactJSON struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

// sendJSON is what `qpq send --json` prints: one object, or with --wait
// one per state change (cmd_send.go).
type sendJSON struct {
	ID     string `json:"id"` // "" until sealed (the recipient's bundle was never seen)
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	At     string `json:"at"` // RFC 3339, UTC
	// Route is how the DM left once stored: "onion" or "direct" (with
	// RouteNote, why); Relays the onion route's length.
	Route     string `json:"route,omitempty"`
	RouteNote string `json:"route_note,omitempty"`
	Relays    int    `json:"relays,omitempty"`
}

// channelJSON is one line of `qpq channel list --json`.
type channelJSON struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}
