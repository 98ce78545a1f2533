package daemon

import (
	"os"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/config"
)

// The first-seen records survive a restart (a restarted node would
// otherwise count every node as new and place nothing for a day), and a
// damaged line costs only that node's record.
func TestPlacementRecordsSurviveAndDamageIsSkipped(t *testing.T) {
	d := newDaemon(t, func(c *config.Config) { c.Placement = 3 })
	p := d.place
	id, _ := identity.NewNode()
	fp := id.Fingerprint()
	p.observe(fp, []string{"127.0.0.1:1"})
	p.mu.Lock()
	want := p.nodes[fp].firstSeen
	p.mu.Unlock()
	p.save()
	f, err := os.OpenFile(p.nodesPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("not a fingerprint 12\n" + fp.String() + "x 5\n\x00\xff\n")
	f.Close()

	q := newPlacer(d)
	q.load()
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.nodes[fp]
	if n == nil || n.firstSeen != want {
		t.Fatalf("after a restart the node's record is %+v, want first seen at %v", n, want)
	}
	for other := range q.nodes {
		if other != fp && other != d.id.Fingerprint() {
			t.Fatalf("a damaged line became node %s", other)
		}
	}
}
