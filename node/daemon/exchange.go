package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
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
	signed, err := descriptor.SignOnion(d.id, d.onion.descriptorOnion(), addrs, d.cfg.Domain, seq, descriptorLifetime)
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
	return nextSeq(filepath.Join(d.cfg.DataDir, seqFile), time.Now(), d.log)
}

// seqFloor is the least sequence number used after the seq file was
// found damaged. Counted sequences grow by about 50 a day, so they never
// come near it; the clock only raises it further.
const seqFloor = 1 << 61

// nextSeq reads the last sequence number from path, writes the next one
// back atomically and returns it. A missing file is a first start (1). A
// damaged one must never make the node reuse a lower number, which
// neighbours would drop as stale: it is kept aside as path.bad and the
// count continues from the larger of seqFloor and the clock, with a
// warning.
func nextSeq(path string, now time.Time, log *slog.Logger) (uint64, error) {
	var seq uint64
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("read descriptor sequence: %w", err)
	default:
		last, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr == nil && last == math.MaxUint64 {
			return 0, fmt.Errorf("descriptor sequence in %s is exhausted", path)
		}
		if perr == nil {
			seq = last
			break
		}
		seq = max(uint64(max(now.UnixNano(), 0)), seqFloor)
		if rerr := os.Rename(path, path+".bad"); rerr != nil {
			log.Warn("damaged descriptor sequence file not kept aside", "path", path, "err", rerr)
		}
		log.Warn("descriptor sequence file is damaged; continuing from a higher number so no older one is reused",
			"path", path, "err", perr, "content", strconv.QuoteToASCII(string(b[:min(len(b), 32)])), "seq", seq+1)
	}
	seq++
	if err := writeFileAtomic(path, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("write descriptor sequence: %w", err)
	}
	return seq, nil
}

// writeFileAtomic replaces path with data so that a crash or power cut
// leaves either the old content or the new, never a torn file: a
// temporary file in the same directory, synced, then renamed over path,
// and the directory synced so the rename itself survives.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dh, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer dh.Close()
	return dh.Sync()
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

// ofThisIsland reports whether a node may be learnt from desc: it is of
// this mesh domain and was not carried in by a bridge from another island,
// whose addresses may be the same private ranges as ours (a node never
// dials them, places mailboxes on them or picks them for onion paths).
func (d *Daemon) ofThisIsland(desc descriptor.Descriptor) bool {
	return desc.Domain == d.cfg.Domain && desc.Island == ""
}

// onDescriptorFrom is the relay's callback for a newly stored descriptor:
// it learns the node the descriptor describes. from is the neighbour it
// arrived from. Dials to addresses never reached are budgeted per from,
// so one neighbour relaying made-up descriptors cannot spend the budget
// of the others; a descriptor with no neighbour (zero from) is charged to
// its signer, and every dial also to the node-wide budget
// (neighbours.NewAddrBurstAll).
func (d *Daemon) onDescriptorFrom(signed []byte, from identity.Fingerprint) {
	desc, err := descriptor.Verify(signed)
	if err != nil || !d.ofThisIsland(desc) {
		return
	}
	src := "link " + from.String()
	if from.IsZero() {
		src = "signer " + desc.FP.String()
	}
	d.learnFrom(desc.FP, desc.Addrs, viaExchange, src)
	d.place.observe(desc.FP, desc.Addrs)
	d.onion.observe(desc, signed)
}
