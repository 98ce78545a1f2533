package daemon

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Peer exchange: each node gossips its signed descriptor like an envelope
// (its lifetime ages like a TTL); a node that learns of another it is not
// linked to adds it to the neighbour table (select.go).
const (
	descriptorLifetime = 2 * time.Hour
	descriptorRefresh  = 30 * time.Minute
	descriptorHops     = 16
	seqFile            = "descriptor.seq"
)

func verifyDescriptor(signed []byte) (identity.Fingerprint, uint64, error) {
	d, err := descriptor.Verify(signed)
	if err != nil {
		return identity.Fingerprint{}, 0, err
	}
	return d.FP, d.Seq, nil
}

// publishLoop spreads the node's descriptor now and on every refresh.
func (d *Daemon) publishLoop() {
	t := time.NewTicker(descriptorRefresh)
	defer t.Stop()
	for {
		if err := d.publishDescriptor(); err != nil {
			d.log.Warn("descriptor not published", "err", err)
		}
		select {
		case <-t.C:
		case <-d.ctx.Done():
			return
		}
	}
}

func (d *Daemon) publishDescriptor() error {
	addrs := d.advertised()
	if len(addrs) == 0 {
		return errors.New("no address to advertise")
	}
	seq, err := d.nextSeq()
	if err != nil {
		return err
	}
	signed, err := descriptor.Sign(d.id, addrs, d.cfg.Domain, seq, descriptorLifetime)
	if err != nil {
		return err
	}
	env, err := gossip.NewSignedEnvelope(schemas.Envelope_Kind_descriptor, d.id.Fingerprint(), signed, uint32(descriptorLifetime/time.Second), descriptorHops)
	if err != nil {
		return err
	}
	_, err = d.eng.Accept(env, relay.Source{Client: "local"})
	return err
}

// nextSeq returns a sequence number higher than any published before,
// persisted in the data dir (wall clocks on routers cannot be trusted to
// rise); without a data dir (selftest) it uses the clock.
func (d *Daemon) nextSeq() (uint64, error) {
	if d.cfg.DataDir == "" {
		return uint64(time.Now().UnixNano()), nil
	}
	path := filepath.Join(d.cfg.DataDir, seqFile)
	var seq uint64
	if b, err := os.ReadFile(path); err == nil {
		seq, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	seq++
	if err := os.WriteFile(path, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	return seq, nil
}

// advertised lists where others can reach this node: the listen address
// when it names one, else the global and private addresses of the up,
// non-loopback interfaces (link-local ones need a zone only we know).
func (d *Daemon) advertised() []string {
	bound := d.tr.Addr()
	if !bound.IP.IsUnspecified() {
		return []string{bound.String()}
	}
	port := strconv.Itoa(bound.Port)
	var out []string
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, _ := ifi.Addrs()
		for _, a := range as {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr()
			if ip.IsLinkLocalUnicast() || ip.IsLoopback() {
				continue
			}
			out = append(out, net.JoinHostPort(ip.String(), port))
			if len(out) == descriptor.MaxAddrs {
				return out
			}
		}
	}
	return out
}

// onDescriptor is the relay's callback for a newly stored descriptor.
func (d *Daemon) onDescriptor(signed []byte) {
	desc, err := descriptor.Verify(signed)
	if err != nil || desc.Domain != d.cfg.Domain {
		return
	}
	d.learn(desc.FP, desc.Addrs, viaExchange)
}
