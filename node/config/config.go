// Package config holds the node's settings and the one table of options
// that flags, environment variables and uci files all go through, so each
// value is parsed and validated in exactly one place.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

// Defaults from DESIGN's "Names and defaults".
const (
	DefaultListen        = "[::]:7443"
	DefaultDomain        = "qpq"
	SocketName           = "qpq.sock"
	StoreName            = "store.db"
	DefaultStoreMaxBytes = 16 << 20
	DefaultMaxTTL        = 7 * 24 * time.Hour
	DefaultMaxHops       = 32
	DefaultMaxLinks      = 8
	// Mailbox placement's defaults (Placement 0: off).
	DefaultPlacementMinAge   = 24 * time.Hour
	DefaultPlacementFallback = time.Hour
	DefaultPlacementPull     = 30 * time.Second
	MaxPlacement             = 8
	// DefaultOnionKeyPeriod is how long an onion key is current.
	DefaultOnionKeyPeriod = 24 * time.Hour
	// MaxDecoyRate bounds decoy-rate: 100 cells of 1,150 bytes a second
	// is about 1 Mbit/s per link, more airtime than a mesh should spend
	// on cover.
	MaxDecoyRate = 100
	// MaxLoopRate bounds loop-rate (each loop is 6 packets of 4 KiB
	// through the mesh).
	MaxLoopRate = 10
	// MaxMixDelay bounds mix-delay.
	MaxMixDelay = time.Minute
	// HardMaxHops is the largest hop limit a node may be configured with;
	// hop limits travel in one byte.
	HardMaxHops = 255
	// maxSocketPath is the longest unix socket path Linux accepts
	// (sun_path is 108 bytes including the terminating NUL).
	maxSocketPath = 107
)

// Config is everything `qpq node` needs. The zero value is not usable:
// start from Default and apply options.
type Config struct {
	// DataDir holds the node's keys and control socket. Default: $QPQ_DATA,
	// else /var/lib/qpq for root, else ~/.local/share/qpq.
	DataDir string
	// Listen is the UDP address for QUIC. Default "[::]:7443".
	Listen string
	// Peers are static neighbours, always kept linked. Default none.
	Peers []link.PeerAddr
	// Control is the unix socket `qpq status` talks to. Default DataDir/qpq.sock.
	Control string
	// LogLevel is the minimum level logged. Default info.
	LogLevel slog.Level
	// Domain is the mesh domain. Default "qpq".
	Domain string
	// Store is the bbolt file holding envelopes. Default DataDir/store.db.
	Store string
	// StoreMaxBytes caps the envelope bytes stored. Default 16 MiB (on a
	// router the store is in RAM).
	StoreMaxBytes int64
	// MaxTTL caps the time to live of any envelope received. Default 7 days.
	MaxTTL time.Duration
	// MaxHops caps the hop limit of any envelope received. Default 32.
	MaxHops int
	// MDNS announces the node and finds neighbours by mDNS. Default on;
	// off whenever the node listens on a loopback address.
	MDNS bool
	// MDNSIfaces selects interfaces by regular expression. Default: every
	// up, multicast-capable, non-loopback interface.
	MDNSIfaces []*regexp.Regexp
	// MaxLinks is how many node links the node keeps; discovered nodes are
	// dialled only below it (static peers always). Default 8.
	MaxLinks int
	// Placement is how many mailbox nodes a DM a client hands this node
	// is placed on (issue 12's mailbox placement; README "How messages
	// travel"); 0, the default, floods every DM as before.
	Placement int
	// PlacementMinAge is how long a node's descriptor must have been
	// known here before it may hold mailboxes. Default 24 h.
	PlacementMinAge time.Duration
	// PlacementFallback is how long a placed DM waits for its receipt
	// before it is flooded after all. Default 1 h.
	PlacementFallback time.Duration
	// PlacementPull is how often the node pulls the mailboxes of the
	// users whose clients use it. Default 30 s.
	PlacementPull time.Duration
	// OnionRelay makes the node relay onion packets (peel, forward, exit)
	// and say so in its descriptor. Default on.
	OnionRelay bool
	// OnionKeyPeriod is how long an onion key is current before it
	// rotates (a key also rotates at every start). Default 24 h.
	OnionKeyPeriod time.Duration
	// DecoyRate is the mean cover cells per second on each link (a
	// Poisson clock whose ticks real onion cells take); 0 is off.
	DecoyRate float64
	// LoopRate is the loop cover packets a second this node sends round
	// 3 relays back to itself; 0 is off.
	LoopRate float64
	// MixDelay is the mean of the random (exponential) time a relay
	// holds each onion packet before passing it on; 0 passes at once.
	MixDelay time.Duration
	// MemLimit is the soft memory limit in bytes; 0 is no limit. Only uci
	// sets it; `qpq node --uci` applies it (runtime/debug.SetMemoryLimit)
	// unless the GOMEMLIMIT environment variable is set, which wins.
	MemLimit int64
	// Enabled is uci's `enabled`: whether the init script starts the
	// service. Only uci sets it; the node itself ignores it.
	Enabled bool
	// Zones are the firewall zones the init script opens the node's ports
	// from (uci `zone`); nil means DefaultZone. Only uci sets them.
	Zones []string
	// Bridge configures qpq-bridge, the gateway build that joins mesh
	// islands over libp2p. The router build reads and checks it but does
	// nothing with it.
	Bridge Bridge
}

// Bridge is what qpq-bridge needs beyond a node's settings (flags
// --bridge-*, variables QPQ_BRIDGE_*, uci section `config bridge 'bridge'`).
type Bridge struct {
	// Island names this bridge's island (1-32 of a-z, 0-9, -); descriptors
	// it carries in from other islands are marked with theirs. Required.
	Island string
	// Secret is shared by the operators of one domain's bridges: the
	// libp2p protocol bridges speak is derived from it and the domain, so
	// only bridges that know it meet. At least 16 characters. Required.
	Secret string
	// Listen are the libp2p addresses (multiaddrs) the bridge listens on.
	// Default DefaultBridgeListen.
	Listen []string
	// Peers are other bridges to dial and keep linked, as multiaddrs
	// ending in /p2p/<peer id> (`qpq-bridge id` prints a bridge's).
	Peers []string
	// Allow are the qpq node fingerprints of the bridges accepted; any
	// other libp2p peer is refused before it can open a stream.
	Allow []identity.Fingerprint
	// Channels are the channel ids (hex, as `qpq channel list` shows them)
	// whose broadcasts cross; other channels stay on their island.
	Channels [][32]byte
	// Rate is the envelopes per second a bridge link may bring in (twice
	// that at once); beyond, its pushes are told to wait. Default
	// DefaultBridgeRate.
	Rate float64
}

// Bridge defaults.
const (
	DefaultBridgeListen = "/ip4/0.0.0.0/udp/7444/quic-v1"
	DefaultBridgeRate   = 50
	// MinBridgeSecret is the shortest rendezvous secret accepted.
	MinBridgeSecret = 16
	// BridgeOptionPrefix starts the flag names of bridge options; their
	// uci names, in the bridge section, leave it out.
	BridgeOptionPrefix = "bridge-"
)

// Default returns the defaults, with DataDir resolved for the current user.
func Default() Config {
	return Config{Listen: DefaultListen, LogLevel: slog.LevelInfo, Domain: DefaultDomain,
		StoreMaxBytes: DefaultStoreMaxBytes, MaxTTL: DefaultMaxTTL, MaxHops: DefaultMaxHops,
		MDNS: true, MaxLinks: DefaultMaxLinks, PlacementMinAge: DefaultPlacementMinAge,
		PlacementFallback: DefaultPlacementFallback, PlacementPull: DefaultPlacementPull,
		OnionRelay: true, OnionKeyPeriod: DefaultOnionKeyPeriod,
		Bridge: Bridge{Listen: []string{DefaultBridgeListen}, Rate: DefaultBridgeRate}}
}

// DefaultDataDir is the data dir when neither --data nor QPQ_DATA is given.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/qpq"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "qpq")
	}
	return "/var/lib/qpq"
}

// Finish fills the defaults that depend on other fields and checks the
// combination, returning every problem at once.
func (c *Config) Finish() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	if c.Control == "" {
		c.Control = filepath.Join(c.DataDir, SocketName)
	}
	if c.Store == "" {
		c.Store = filepath.Join(c.DataDir, StoreName)
	}
	var errs []error
	if len(c.Control) > maxSocketPath {
		errs = append(errs, &OptionError{Option: "--control", Err: fmt.Errorf(
			"socket path %q is %d bytes, unix sockets allow %d: choose a shorter --control or --data",
			c.Control, len(c.Control), maxSocketPath)})
	}
	return errors.Join(errs...)
}

// OptionError names the option (flag, variable or uci option) whose value
// was wrong. The CLI maps it to exit status 2.
type OptionError struct {
	Option string // as the user wrote it: "--listen", "QPQ_LISTEN", "listen"
	Value  string
	Err    error
}

func (e *OptionError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %v", e.Option, e.Err)
	}
	return fmt.Sprintf("%s %q: %v", e.Option, e.Value, e.Err)
}

func (e *OptionError) Unwrap() error { return e.Err }

// Option is one setting, reachable as a flag, an environment variable and
// a uci option.
type Option struct {
	Name  string // flag name; the uci option is the same with '_' for '-'
	Env   string // environment variable; "" when there is none
	List  bool   // repeatable flag, comma-separated variable, uci list
	Arg   string // placeholder in help, e.g. "ADDR"
	Bool  bool   // a flag that may be given without a value (--mdns, --mdns=false)
	Usage string
	// UCIOnly options are not flags of `qpq node` (the init script turns
	// them into something else, like GOMEMLIMIT).
	UCIOnly bool
	// Bridge options are qpq-bridge's; in uci they live in the bridge
	// section, named without BridgeOptionPrefix.
	Bridge bool
	set    func(c *Config, v string) error
	reset  func(c *Config) // clears a list before the first value from a new source
}

// UCIName is the option's name in /etc/config/qpq (in its section).
func (o Option) UCIName() string {
	return strings.ReplaceAll(strings.TrimPrefix(o.Name, BridgeOptionPrefix), "-", "_")
}

// Set parses v into c.
func (o Option) Set(c *Config, v string) error { return o.set(c, v) }

// Options returns the node's option table.
func Options() []Option {
	return []Option{
		{Name: "data", Env: "QPQ_DATA", Arg: "DIR", Usage: "data dir for keys and the control socket (default /var/lib/qpq as root, else ~/.local/share/qpq)",
			set: func(c *Config, v string) error {
				if v == "" {
					return errors.New("empty path")
				}
				c.DataDir = v
				return nil
			}},
		{Name: "listen", Env: "QPQ_LISTEN", Arg: "ADDR", Usage: "UDP address for QUIC (default " + DefaultListen + ")",
			set: func(c *Config, v string) error {
				if err := link.CheckHostPort(v); err != nil {
					return err
				}
				c.Listen = v
				return nil
			}},
		{Name: "peer", Env: "QPQ_PEERS", List: true, Arg: "ADDR#FP", Usage: "static neighbour to keep linked, e.g. 192.0.2.1:7443#<fingerprint> (repeatable; QPQ_PEERS is comma-separated)",
			set: func(c *Config, v string) error {
				p, err := link.ParsePeerAddr(v)
				if err != nil {
					return err
				}
				c.Peers = append(c.Peers, p)
				return nil
			},
			reset: func(c *Config) { c.Peers = nil }},
		{Name: "control", Env: "QPQ_CONTROL", Arg: "PATH", Usage: "control socket path (default DATA/qpq.sock)",
			set: func(c *Config, v string) error {
				if v == "" {
					return errors.New("empty path")
				}
				c.Control = v
				return nil
			}},
		{Name: "log-level", Env: "QPQ_LOG_LEVEL", Arg: "LEVEL", Usage: "debug, info, warn or error (default info)",
			set: func(c *Config, v string) error {
				var l slog.Level
				if err := l.UnmarshalText([]byte(v)); err != nil {
					return fmt.Errorf("want debug, info, warn or error")
				}
				c.LogLevel = l
				return nil
			}},
		{Name: "store", Env: "QPQ_STORE", Arg: "PATH", Usage: "envelope store file (default DATA/store.db)",
			set: func(c *Config, v string) error {
				if v == "" {
					return errors.New("empty path")
				}
				c.Store = v
				return nil
			}},
		{Name: "store-max-bytes", Env: "QPQ_STORE_MAX_BYTES", Arg: "SIZE", Usage: "most envelope bytes the store holds, e.g. 16M (default 16M)",
			set: func(c *Config, v string) error {
				n, err := ParseSize(v)
				if err != nil {
					return err
				}
				if n < 64<<10 {
					return errors.New("below 64K, the store could not hold a single large message")
				}
				c.StoreMaxBytes = n
				return nil
			}},
		{Name: "max-ttl", Env: "QPQ_MAX_TTL", Arg: "DURATION", Usage: "longest time to live this node grants any envelope, e.g. 7d (default 7d)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < time.Minute || d > 90*24*time.Hour {
					return errors.New("want between 1m and 90d")
				}
				c.MaxTTL = d
				return nil
			}},
		{Name: "max-hops", Env: "QPQ_MAX_HOPS", Arg: "N", Usage: "largest hop limit this node lets an envelope keep (default 32)",
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > HardMaxHops {
					return fmt.Errorf("want a whole number from 0 to %d", HardMaxHops)
				}
				c.MaxHops = n
				return nil
			}},
		{Name: "mdns", Env: "QPQ_MDNS", Bool: true, Arg: "BOOL", Usage: "find neighbours and be found by mDNS (default on; always off on a loopback address)",
			set: func(c *Config, v string) error {
				b, err := ParseBool(v)
				c.MDNS = b
				return err
			}},
		{Name: "mdns-iface", Env: "QPQ_MDNS_IFACES", List: true, Arg: "REGEXP", Usage: "interfaces for mDNS, by regular expression, e.g. '^br-' (repeatable; default every multicast interface)",
			set: func(c *Config, v string) error {
				re, err := regexp.Compile(v)
				if err != nil {
					return fmt.Errorf("not a regular expression: %v", err)
				}
				c.MDNSIfaces = append(c.MDNSIfaces, re)
				return nil
			},
			reset: func(c *Config) { c.MDNSIfaces = nil }},
		{Name: "domain", Env: "QPQ_DOMAIN", Arg: "NAME", Usage: "mesh domain: only nodes of the same domain link by discovery (default qpq)",
			set: func(c *Config, v string) error {
				if !domainRE.MatchString(v) {
					return errors.New("want 1-32 lowercase letters, digits or '-'")
				}
				c.Domain = v
				return nil
			}},
		{Name: "max-links", Env: "QPQ_MAX_LINKS", Arg: "N", Usage: "node links to keep; discovered nodes are dialled only below it (default 8)",
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 256 {
					return errors.New("want a whole number from 1 to 256")
				}
				c.MaxLinks = n
				return nil
			}},
		{Name: "placement", Env: "QPQ_PLACEMENT", Arg: "K", Usage: fmt.Sprintf("place each DM from this node's clients on K mailbox nodes instead of flooding it (0-%d; default 0: flood)", MaxPlacement),
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > MaxPlacement {
					return fmt.Errorf("want a whole number from 0 to %d", MaxPlacement)
				}
				c.Placement = n
				return nil
			}},
		{Name: "placement-min-age", Env: "QPQ_PLACEMENT_MIN_AGE", Arg: "DURATION", Usage: "how long a node must have been known before it holds mailboxes (default 24h)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < 0 || d > 30*24*time.Hour {
					return errors.New("want between 0 and 30d")
				}
				c.PlacementMinAge = d
				return nil
			}},
		{Name: "placement-fallback", Env: "QPQ_PLACEMENT_FALLBACK", Arg: "DURATION", Usage: "how long a placed DM waits for its receipt before it is flooded (default 1h)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < time.Second || d > 7*24*time.Hour {
					return errors.New("want between 1s and 7d")
				}
				c.PlacementFallback = d
				return nil
			}},
		{Name: "placement-pull", Env: "QPQ_PLACEMENT_PULL", Arg: "DURATION", Usage: "how often the mailboxes of this node's users are pulled (default 30s)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < 100*time.Millisecond || d > time.Hour {
					return errors.New("want between 100ms and 1h")
				}
				c.PlacementPull = d
				return nil
			}},
		{Name: "onion-relay", Env: "QPQ_ONION_RELAY", Bool: true, Arg: "BOOL", Usage: "relay onion packets for other people's routes (default on)",
			set: func(c *Config, v string) error {
				b, err := ParseBool(v)
				c.OnionRelay = b
				return err
			}},
		{Name: "onion-key-period", Env: "QPQ_ONION_KEY_PERIOD", Arg: "DURATION", Usage: "how long an onion key is used before it rotates (default 24h; it also rotates at every start)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < time.Minute || d > 7*24*time.Hour {
					return errors.New("want between 1m and 7d")
				}
				c.OnionKeyPeriod = d
				return nil
			}},
		{Name: "decoy-rate", Env: "QPQ_DECOY_RATE", Arg: "CELLS", Usage: "cover cells per second on each link, at random (Poisson) times; real onion cells take their place (default 0: off)",
			set: func(c *Config, v string) error {
				r, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(r) || r < 0 || r > MaxDecoyRate {
					return fmt.Errorf("want cells per second between 0 and %d", MaxDecoyRate)
				}
				c.DecoyRate = r
				return nil
			}},
		{Name: "loop-rate", Env: "QPQ_LOOP_RATE", Arg: "LOOPS", Usage: "loop cover packets a second, sent round 3 relays back to this node and counted, to show relays that drop packets (default 0: off)",
			set: func(c *Config, v string) error {
				r, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(r) || r < 0 || r > MaxLoopRate {
					return fmt.Errorf("want loops a second between 0 and %d", MaxLoopRate)
				}
				c.LoopRate = r
				return nil
			}},
		{Name: "mix-delay", Env: "QPQ_MIX_DELAY", Arg: "DURATION", Usage: "mean random delay a relay holds each onion packet for (exponential; default 0: none)",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < 0 || d > MaxMixDelay {
					return fmt.Errorf("want between 0 and %v", MaxMixDelay)
				}
				c.MixDelay = d
				return nil
			}},
		{Name: "enabled", UCIOnly: true, Usage: "start the service (0 or 1)",
			set: func(c *Config, v string) error {
				b, err := ParseBool(v)
				c.Enabled = b
				return err
			}},
		{Name: "zone", UCIOnly: true, List: true, Usage: "firewall zone the node is reachable from (repeatable; default lan)",
			set: func(c *Config, v string) error {
				if !zoneRE.MatchString(v) {
					return errors.New("want a firewall zone name: 1-32 letters, digits or '_'")
				}
				c.Zones = append(c.Zones, v)
				return nil
			},
			reset: func(c *Config) { c.Zones = nil }},
		{Name: "mem-limit", UCIOnly: true, Usage: "soft memory limit, e.g. 48M; 0 is no limit",
			set: func(c *Config, v string) error {
				n, err := ParseSize(v)
				if err != nil {
					return err
				}
				if n != 0 && n < 8<<20 {
					return errors.New("below 8M, the node could not run")
				}
				c.MemLimit = n
				return nil
			}},
		{Name: "bridge-island", Env: "QPQ_BRIDGE_ISLAND", Bridge: true, Arg: "NAME", Usage: "this bridge's island, e.g. a town or district (1-32 of a-z, 0-9, -; required)",
			set: func(c *Config, v string) error {
				if !domainRE.MatchString(v) {
					return errors.New("want 1-32 of a-z, 0-9 and -")
				}
				c.Bridge.Island = v
				return nil
			}},
		{Name: "bridge-secret", Env: "QPQ_BRIDGE_SECRET", Bridge: true, Arg: "SECRET", Usage: "rendezvous secret shared by the domain's bridge operators (at least 16 characters; required)",
			set: func(c *Config, v string) error {
				if len(v) < MinBridgeSecret {
					return fmt.Errorf("%d characters, want at least %d", len(v), MinBridgeSecret)
				}
				c.Bridge.Secret = v
				return nil
			}},
		{Name: "bridge-listen", Env: "QPQ_BRIDGE_LISTEN", Bridge: true, List: true, Arg: "MULTIADDR", Usage: "libp2p address to listen on (repeatable; default " + DefaultBridgeListen + ")",
			set: func(c *Config, v string) error {
				if err := checkMultiaddr(v, false); err != nil {
					return err
				}
				c.Bridge.Listen = append(c.Bridge.Listen, v)
				return nil
			},
			reset: func(c *Config) { c.Bridge.Listen = nil }},
		{Name: "bridge-peer", Env: "QPQ_BRIDGE_PEERS", Bridge: true, List: true, Arg: "MULTIADDR", Usage: "another bridge to keep linked, e.g. /ip4/192.0.2.7/udp/7444/quic-v1/p2p/<peer id> (repeatable)",
			set: func(c *Config, v string) error {
				if err := checkMultiaddr(v, true); err != nil {
					return err
				}
				c.Bridge.Peers = append(c.Bridge.Peers, v)
				return nil
			},
			reset: func(c *Config) { c.Bridge.Peers = nil }},
		{Name: "bridge-allow", Env: "QPQ_BRIDGE_ALLOW", Bridge: true, List: true, Arg: "FP", Usage: "fingerprint of a bridge accepted (repeatable; every other is refused)",
			set: func(c *Config, v string) error {
				fp, err := identity.ParseFingerprint(v)
				if err != nil {
					return err
				}
				c.Bridge.Allow = append(c.Bridge.Allow, fp)
				return nil
			},
			reset: func(c *Config) { c.Bridge.Allow = nil }},
		{Name: "bridge-channel", Env: "QPQ_BRIDGE_CHANNELS", Bridge: true, List: true, Arg: "ID", Usage: "channel id whose broadcasts cross the bridge, as qpq channel list shows it (repeatable; default none)",
			set: func(c *Config, v string) error {
				b, err := hex.DecodeString(v)
				if err != nil || len(b) != 32 {
					return errors.New("want a channel id: 64 hex digits")
				}
				c.Bridge.Channels = append(c.Bridge.Channels, [32]byte(b))
				return nil
			},
			reset: func(c *Config) { c.Bridge.Channels = nil }},
		{Name: "bridge-rate", Env: "QPQ_BRIDGE_RATE", Bridge: true, Arg: "ENVELOPES", Usage: fmt.Sprintf("envelopes a second one bridge link may bring in (default %d)", DefaultBridgeRate),
			set: func(c *Config, v string) error {
				r, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(r) || r < 1 || r > 10000 {
					return errors.New("want envelopes a second between 1 and 10000")
				}
				c.Bridge.Rate = r
				return nil
			}},
	}
}

// checkMultiaddr is a first check of a libp2p address in the router
// build, which has no libp2p: it starts with a protocol, has no spaces,
// and ends in /p2p/<id> when a peer is wanted. qpq-bridge parses it fully.
func checkMultiaddr(v string, wantPeer bool) error {
	if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\n") || len(v) > 512 {
		return errors.New("want a multiaddr such as " + DefaultBridgeListen)
	}
	if wantPeer && !strings.Contains(v, "/p2p/") {
		return errors.New("want the bridge's peer id at the end: .../p2p/<peer id> (qpq-bridge id prints it)")
	}
	return nil
}

// CheckBridge reports what qpq-bridge cannot run without.
func (c Config) CheckBridge() error {
	var errs []error
	if c.Bridge.Island == "" {
		errs = append(errs, &OptionError{Option: "--bridge-island", Err: errors.New("required: name this bridge's island")})
	}
	if c.Bridge.Secret == "" {
		errs = append(errs, &OptionError{Option: "--bridge-secret", Err: errors.New("required: the rendezvous secret the domain's bridge operators share")})
	}
	if len(c.Bridge.Allow) == 0 {
		errs = append(errs, &OptionError{Option: "--bridge-allow", Err: errors.New("required: the fingerprints of the bridges to accept")})
	}
	if len(c.Bridge.Listen) == 0 {
		errs = append(errs, &OptionError{Option: "--bridge-listen", Err: errors.New("required: at least one address")})
	}
	return errors.Join(errs...)
}

var domainRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// zoneRE is a uci name, as firewall zones are named; '*' (every zone) is not one.
var zoneRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

// Lookup returns the option with the given flag name.
func Lookup(name string) (Option, bool) {
	for _, o := range Options() {
		if o.Name == name {
			return o, true
		}
	}
	return Option{}, false
}
