package daemon

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := newBackoff(time.Second, 8*time.Second)
	b.rand = func() float64 { return 0.999 }
	var got []time.Duration
	for range 6 {
		got = append(got, b.next().Round(10*time.Millisecond))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("upper bounds %v, want %v", got, want)
		}
	}
	b.rand = func() float64 { return 0 }
	if d := b.next(); d != 4*time.Second {
		t.Fatalf("lower bound at the cap: %v, want half of 8s", d)
	}
	b.reset()
	if d := b.next(); d != 500*time.Millisecond {
		t.Fatalf("after reset: %v, want 500ms", d)
	}
}
