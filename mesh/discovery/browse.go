package discovery

import (
	"context"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/hashicorp/mdns"
)

// browseLoop runs a browse round each time it is woken.
func (d *Discovery) browseLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.wakeBrowse:
		}
		d.mu.Lock()
		infos := make([]*ifaceInfo, 0, len(d.ifaces))
		for _, info := range d.ifaces {
			infos = append(infos, info)
		}
		d.mu.Unlock()
		var wg sync.WaitGroup
		for _, info := range infos {
			wg.Go(func() { d.query(info) })
		}
		wg.Wait()
	}
}

// query runs one hashicorp query on info's interface. The client aborts
// when IPv6 cannot be set up on the interface, so IPv6 is used only where
// the interface has a link-local address, and a failure with it is retried
// without.
func (d *Discovery) query(info *ifaceInfo) {
	has4, has6 := len(info.v4()) > 0, len(info.v6LinkLocal()) > 0
	if info.ifi.Flags&net.FlagLoopback != 0 {
		has6 = false
	}
	err := d.queryOnce(info, !has4, !has6)
	if err != nil && has4 && has6 && d.ctx.Err() == nil {
		d.log.Debug("mdns: query with IPv6 failed; retrying IPv4 only", "iface", info.ifi.Name, "err", err)
		err = d.queryOnce(info, false, true)
	}
	if err != nil && d.ctx.Err() == nil {
		d.log.Warn("mdns: query", "iface", info.ifi.Name, "err", err)
	}
}

func (d *Discovery) queryOnce(info *ifaceInfo, no4, no6 bool) error {
	if no4 && no6 {
		return nil
	}
	entries := make(chan *mdns.ServiceEntry, 64)
	ifi := info.ifi
	params := &mdns.QueryParam{
		Service:     Service,
		Domain:      "local",
		Timeout:     queryTimeout,
		Interface:   &ifi,
		Entries:     entries,
		DisableIPv4: no4,
		DisableIPv6: no6,
		Logger:      log.New(debugWriter{d.log, info.ifi.Name}, "", 0),
	}
	err := mdns.QueryContext(d.ctx, params)
	close(entries)
	suffix := "." + serviceAddr
	for e := range entries {
		if !strings.HasSuffix(strings.ToLower(e.Name), suffix) {
			continue
		}
		var v4s, v6s []net.IP
		if e.AddrV4 != nil {
			v4s = append(v4s, e.AddrV4)
		}
		zone := ""
		if e.AddrV6IPAddr != nil {
			v6s = append(v6s, e.AddrV6IPAddr.IP)
			zone = e.AddrV6IPAddr.Zone
		}
		d.report(info, e.InfoFields, e.Port, v4s, v6s, zone)
	}
	return err
}

// debugWriter turns the hashicorp client's log lines into debug records.
type debugWriter struct {
	log   *slog.Logger
	iface string
}

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Log(context.Background(), slog.LevelDebug, "mdns client: "+strings.TrimSpace(string(p)), "iface", w.iface)
	return len(p), nil
}
