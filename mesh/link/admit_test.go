package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func udpAddr(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		panic(err)
	}
	return a
}

// testAdmission is an admission on a clock the test moves.
func testAdmission() (*admission, *time.Time) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newAdmission()
	a.now = func() time.Time { return now }
	return a, &now
}

// start runs one Initial through the admission as quic-go would: retry
// first for one without a token, then connContext. It returns whether a
// Retry was asked for, the refusal, and a cancel that ends the
// connection.
func start(a *admission, addr string, verified bool) (retry bool, err error, end context.CancelFunc) {
	ua := udpAddr(addr)
	if !verified && a.retry(ua) {
		return true, nil, func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cctx, err := a.connContext(ctx, &quic.ClientInfo{RemoteAddr: ua, AddrVerified: verified})
	if err != nil {
		cancel()
		return false, err, func() {}
	}
	// Release at once as well as through the context, so counts are
	// exact when end returns.
	return false, nil, func() { cancel(); cctx.Value(ticketKey{}).(*ticket).release() }
}

func checkCounts(t *testing.T, a *admission, unv, ver int) {
	t.Helper()
	if u, v := a.inProgress(); u != unv || v != ver {
		t.Fatalf("in progress: %d unvalidated, %d validated; want %d and %d", u, v, unv, ver)
	}
}

// A connection that ends without being accepted is uncounted through its
// context.
func TestAdmissionUncountsEndedConnections(t *testing.T) {
	testkit.LeakCheck(t)
	a, _ := testAdmission()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := a.connContext(ctx, &quic.ClientInfo{RemoteAddr: udpAddr("10.9.0.1:1")}); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, a, 1, 0)
	cancel()
	testkit.WaitFor(t, 5*time.Second, "no unverified handshake in progress", func() bool { u, _ := a.inProgress(); return u == 0 })
}

// Spoofed Initials from many addresses get Retry once RetryAbove of them
// are in progress; a validated sender is still admitted.
func TestAdmissionRetriesUnvalidatedPastTheBound(t *testing.T) {
	testkit.LeakCheck(t)
	a, _ := testAdmission()
	var ends []context.CancelFunc
	for i := range RetryAbove {
		retry, err, end := start(a, fmt.Sprintf("10.0.0.%d:4000", i+1), false)
		if retry || err != nil {
			t.Fatalf("Initial %d from a fresh address: retry %v, err %v; want a handshake", i, retry, err)
		}
		ends = append(ends, end)
	}
	if retry, _, _ := start(a, "10.0.1.1:4000", false); !retry {
		t.Errorf("Initial %d from a fresh address was not asked for a Retry", RetryAbove+1)
	}
	if retry, err, end := start(a, "10.0.1.1:4000", true); retry || err != nil {
		t.Errorf("a validated sender during the flood: retry %v, err %v; want a handshake", retry, err)
	} else {
		ends = append(ends, end)
	}
	for _, end := range ends {
		end()
	}
	checkCounts(t, a, 0, 0)
	if retry, err, _ := start(a, "10.0.1.2:4000", false); retry || err != nil {
		t.Errorf("after the flood ended: retry %v, err %v; want a handshake without Retry", retry, err)
	}
}

// One source (an IPv6 /64 here) holds at most MaxHandshakesPerSource
// handshakes in progress; another source is not affected.
func TestAdmissionBoundsOneSource(t *testing.T) {
	testkit.LeakCheck(t)
	a, _ := testAdmission()
	held := 0
	for i := range 2 * MaxHandshakesPerSource {
		// Different addresses in one /64 are one source.
		_, err, _ := start(a, fmt.Sprintf("[2001:db8::%x]:4000", i+1), true)
		if err == nil {
			held++
		} else if !errors.Is(err, errHandshakeBusy) {
			t.Fatal(err)
		}
	}
	if held != MaxHandshakesPerSource {
		t.Errorf("one /64 holds %d handshakes in progress, want %d", held, MaxHandshakesPerSource)
	}
	if retry, _, _ := start(a, "[2001:db8::ffff]:4000", false); !retry {
		t.Errorf("an unvalidated Initial from the busy /64 was not asked for a Retry")
	}
	if _, err, _ := start(a, "[2001:db8:0:1::1]:4000", true); err != nil {
		t.Errorf("the next /64 was refused: %v", err)
	}
}

// Validated handshakes are bounded node-wide; one that ends frees its
// place.
func TestAdmissionBoundsValidatedHandshakes(t *testing.T) {
	testkit.LeakCheck(t)
	a, _ := testAdmission()
	var last context.CancelFunc
	for i := range MaxHandshakes {
		_, err, end := start(a, fmt.Sprintf("10.1.%d.%d:4000", i/200, i%200+1), true)
		if err != nil {
			t.Fatalf("validated handshake %d refused: %v", i, err)
		}
		last = end
	}
	if _, err, _ := start(a, "10.2.0.1:4000", true); !errors.Is(err, errHandshakeBusy) {
		t.Fatalf("handshake %d: %v, want refused", MaxHandshakes+1, err)
	}
	last()
	checkCounts(t, a, 0, MaxHandshakes-1)
	if _, err, _ := start(a, "10.2.0.1:4000", true); err != nil {
		t.Errorf("after one ended: %v", err)
	}
}

// One address completing handshake after handshake (issue 9: 15,000 of
// them) is held to SourceRate a second once its burst and debt are
// spent: first Retry for its unvalidated Initials, then refusal. Others
// are unaffected, and it recovers as time passes.
func TestAdmissionRateLimitsOneSourcesHandshakes(t *testing.T) {
	testkit.LeakCheck(t)
	a, now := testAdmission()
	done := 0
	for range 1000 {
		_, err, end := start(a, "10.3.0.1:4000", true)
		if err != nil {
			break
		}
		end()
		done++
	}
	if want := SourceBurst + SourceDebt; done != want {
		t.Errorf("one address completed %d handshakes at once, want %d", done, want)
	}
	if retry, _, _ := start(a, "10.3.0.1:4001", false); !retry {
		t.Errorf("its next unvalidated Initial got no Retry")
	}
	if _, err, _ := start(a, "10.3.0.2:4000", true); err != nil {
		t.Errorf("another address was refused: %v", err)
	}
	*now = now.Add(time.Second)
	got := 0
	for range 100 {
		if _, err, end := start(a, "10.3.0.1:4000", true); err == nil {
			end()
			got++
		}
	}
	if got != SourceRate {
		t.Errorf("a second later it completed %d more, want %d", got, SourceRate)
	}
}
