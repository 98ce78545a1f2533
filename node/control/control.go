// Package control is the node's local control socket: a unix socket in the
// data dir (mode 0600) that `qpq status` and later local tools query with
// one JSON request per connection.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

const (
	maxRequest  = 4 << 10
	connTimeout = 5 * time.Second
	maxConns    = 8
)

// ErrNoNode is returned by Query when no node answers on the socket.
var ErrNoNode = errors.New("no node answers")

// Status is what `qpq status --json` prints. Field names are a contract
// with scripts: add fields, never rename them.
type Status struct {
	Fingerprint string `json:"fingerprint"`
	Short       string `json:"short"`
	Version     string `json:"version"`
	Listen      string `json:"listen"` // the address actually bound
	UptimeS     int64  `json:"uptime_s"`
	Peers       []Peer `json:"peers"` // always a list, never null
	Store       Store  `json:"store"`
	Seen        Seen   `json:"seen"`
	// Handshakes shows the flood bounds at work (issue 9, defect 16).
	Handshakes Handshakes `json:"handshakes"`
	// Dialled counts the short-lived links to nodes that are not
	// neighbours (issue 12); they are not in Peers.
	Dialled Dialled `json:"dialled"`
	// Placement is mailbox placement's work (issue 12).
	Placement Placement `json:"placement"`
	// Onion is onion relaying's work (mesh/onion).
	Onion Onion `json:"onion"`
	// Cells is the links' cell streams (mesh/cell): onion packets and
	// decoys.
	Cells Cells `json:"cells"`
	// Loops is loop cover traffic: onion packets this node sent round
	// 3 relays back to itself.
	Loops Loops `json:"loops"`
}

// Placement counts mailbox placement: its configuration, what it holds
// now and what it did since the node started.
type Placement struct {
	K         int   `json:"k"`         // mailbox nodes per DM; 0: off (DMs flood)
	Nodes     int   `json:"nodes"`     // nodes known by descriptor
	Eligible  int   `json:"eligible"`  // of them, known long enough to hold mailboxes
	Held      int   `json:"held"`      // DMs stored here, held back from flooding
	Boxed     int   `json:"boxed"`     // DMs placed on this node for others to pull
	Placed    int64 `json:"placed"`    // DMs of this node's clients placed
	Flooded   int64 `json:"flooded"`   // flooded at once: no mailbox node reachable
	Fallbacks int64 `json:"fallbacks"` // flooded later: no receipt in time
	Pulled    int64 `json:"pulled"`    // DMs pulled for this node's users
}

// Onion counts onion relaying since the node started.
type Onion struct {
	Relay        bool   `json:"relay"`         // this node relays onion packets
	Epoch        uint32 `json:"epoch"`         // the current onion key's epoch
	Keys         int    `json:"keys"`          // keys honoured: the current and retired ones in their overlap
	Relays       int    `json:"relays"`        // onion relays known by descriptor (for clients' routes)
	Peeled       int64  `json:"peeled"`        // packets peeled here (one layer each)
	Forwarded    int64  `json:"forwarded"`     // handed to the next relay (links and dialled links)
	Stored       int64  `json:"stored"`        // sent on as onion envelopes: the next relay could not be reached
	Exited       int64  `json:"exited"`        // messages this node injected as the exit
	Cover        int64  `json:"cover"`         // cover packets dropped as the exit (clients' decoys)
	Entered      int64  `json:"entered"`       // packets this node's clients handed it for their first relay
	Replies      int64  `json:"replies"`       // replies sent as the exit (the message was stored)
	Delivered    int64  `json:"delivered"`     // replies handed to this node's waiting clients
	Replays      int64  `json:"replays"`       // refused: seen before under the same key
	MACFailures  int64  `json:"mac_failures"`  // refused: altered, or not for this key
	UnknownEpoch int64  `json:"unknown_epoch"` // refused: under a key not held (retired, lost)
	Dropped      int64  `json:"dropped"`       // dropped: over a bound, or the next relay unknown
	Reassembling int    `json:"reassembling"`  // messages waiting for more fragments here
	Mixing       int64  `json:"mixing"`        // packets held by the mix delay now
}

// Cells counts the cells of every link since the node started.
type Cells struct {
	DecoyRate     float64 `json:"decoy_rate"`     // cover cells a second per link (0: off)
	Links         int     `json:"links"`          // links carrying cells now
	SentReal      int64   `json:"sent_real"`      // cells of onion packets and message streams sent
	SentCover     int64   `json:"sent_cover"`     // cover cells sent
	QueueFull     int64   `json:"queue_full"`     // packets over the rate a link's queue had no room for (sent by RPC at once)
	SendFailed    int64   `json:"send_failed"`    // cells lost as the link went down or its send queue filled
	Received      int64   `json:"received"`       // cells received
	ReceivedCover int64   `json:"received_cover"` // of them cover, dropped unread
	Packets       int64   `json:"packets"`        // onion packets reassembled from cells
	Limited       int64   `json:"limited"`        // cells dropped over a neighbour's rate
	Bad           int64   `json:"bad"`            // datagrams that were not cells
	Abandoned     int64   `json:"abandoned"`      // packets whose cells never all came
	// The message stream: links whose pushes, raises and placements ride
	// cells (both sides at decoy rate 1 or more), the stream's data
	// cells sent, sent again and received, and calls too big for it or
	// over the rate, sent on the link's RPC stream at once.
	Streamed       int   `json:"streamed"`
	StreamSent     int64 `json:"stream_sent"`
	StreamResent   int64 `json:"stream_resent"`
	StreamReceived int64 `json:"stream_received"`
	StreamOverflow int64 `json:"stream_overflow"`
	StreamDead     int64 `json:"stream_dead"` // streams closed (with their links) because the peer stopped acknowledging
}

// Loops counts loop cover packets since the node started.
type Loops struct {
	Rate     float64 `json:"rate"`     // loops a second (0: off)
	Sent     int64   `json:"sent"`     // loops sent
	Returned int64   `json:"returned"` // came back within 30 s
	Lost     int64   `json:"lost"`     // did not: dropped on the way, or a relay down
	Skipped  int64   `json:"skipped"`  // ticks with no loop sent (too few relays, or too many out)
}

// Dialled counts dialled links held now.
type Dialled struct {
	Out      int `json:"out"`      // open links this node dialled
	Dialling int `json:"dialling"` // dials in progress
	In       int `json:"in"`       // links other nodes dialled to this one
}

// Handshakes counts incoming QUIC handshakes since the node started.
type Handshakes struct {
	InProgress int    `json:"in_progress"` // not yet accepted or ended
	Retries    uint64 `json:"retries"`     // answered with a Retry (address validation under load)
	Refused    uint64 `json:"refused"`     // refused at a bound
}

// Seen is the broadcast seen-set's state.
type Seen struct {
	FillRatio      float64 `json:"fill_ratio"`
	FPRate         float64 `json:"fp_rate"`
	Duplicates     uint64  `json:"duplicates"`
	FalsePositives uint64  `json:"false_positives"`
	MemoryBytes    int     `json:"memory_bytes"`
}

// Store is the envelope store's fill.
type Store struct {
	Path       string `json:"path"`
	Envelopes  int64  `json:"envelopes"`
	Bytes      int64  `json:"bytes"`
	MaxBytes   int64  `json:"max_bytes"`
	Tombstones int64  `json:"tombstones"`
	// Damaged counts damaged records found, logged and removed since start.
	Damaged int64 `json:"damaged"`
	// Kinds counts the envelopes held by kind ("dm", "bundle", ...).
	Kinds map[string]int `json:"kinds"`
}

// Peer is one linked neighbour.
type Peer struct {
	Fingerprint string `json:"fingerprint"`
	Addr        string `json:"addr"`
	Direction   string `json:"direction"` // "outbound" or "inbound"
	Via         string `json:"via"`       // "static", "mdns", "exchange", "inbound" or "bridge"
	// Island is, for a bridge link, the island of the bridge at its other
	// end.
	Island string `json:"island,omitempty"`
	// Crossed, Held and Slowed count, for a bridge link, the envelopes
	// that came in from the other island, those kept from crossing either
	// way (channels not bridged, other islands' descriptors), and the
	// pushes its rate limit told to wait.
	Crossed uint64  `json:"crossed,omitempty"`
	Held    uint64  `json:"held,omitempty"`
	Slowed  uint64  `json:"slowed,omitempty"`
	RTTMs   float64 `json:"rtt_ms"`
	// BytesSent and BytesReceived are the link's UDP payload bytes so
	// far, QUIC's framing included (what decoys cost on the air).
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	LinkedS       int64  `json:"linked_s"`
	// Pick says why a link this node chose from its neighbour table is
	// kept: "random" (one of its random picks), "rtt" (among the fastest
	// it knows) or "trial" (dialled to compare its RTT); empty otherwise.
	Pick string `json:"pick,omitempty"`
	// Protocol is the protocol version the link agreed on: 1 with a node
	// from before flow control (issue 12), which is still served.
	Protocol int `json:"protocol"`
}

type request struct {
	Op string `json:"op"`
}

type response struct {
	Status *Status `json:"status,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// StatusFunc produces the node's current status.
type StatusFunc func() Status

// Server answers control requests until Close.
type Server struct {
	ln     net.Listener
	status StatusFunc
	log    *slog.Logger
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// Listen creates the socket at path with mode 0600, replacing a stale
// socket left by a node that died, but refusing to steal one a running
// node still answers on.
func Listen(path string, status StatusFunc, log *slog.Logger) (*Server, error) {
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another node is running there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
	}
	// The umask makes the socket 0600 from its first instant.
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &Server{ln: ln, status: status, log: log, sem: make(chan struct{}, maxConns)}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.Close() // busy: a local tool can retry
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(connTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest), maxRequest).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req request
	var resp response
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		switch req.Op {
		case "status":
			st := s.status()
			resp.Status = &st
		default:
			resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		}
	}
	if err := json.NewEncoder(c).Encode(resp); err != nil {
		s.log.Debug("control reply failed", "err", err)
	}
}

// Close stops serving and removes the socket. Safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close() // a unix listener removes its socket file
		s.wg.Wait()
	})
	return err
}

// QueryStatus asks the node at path for its status.
func QueryStatus(ctx context.Context, path string) (Status, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Status{}, fmt.Errorf("%w on %s: %v", ErrNoNode, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(request{Op: "status"}); err != nil {
		return Status{}, fmt.Errorf("%w on %s: %v", ErrNoNode, path, err)
	}
	var resp response
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&resp); err != nil {
		return Status{}, fmt.Errorf("%w on %s: %v", ErrNoNode, path, err)
	}
	if resp.Error != "" {
		return Status{}, fmt.Errorf("node on %s: %s", path, resp.Error)
	}
	if resp.Status == nil {
		return Status{}, fmt.Errorf("node on %s: empty answer", path)
	}
	if resp.Status.Peers == nil {
		resp.Status.Peers = []Peer{}
	}
	return *resp.Status, nil
}
