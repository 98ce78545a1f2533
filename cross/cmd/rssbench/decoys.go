package main

import (
	"fmt"
	"path/filepath"
	"time"
)

// runDecoys measures a node whose links all carry decoys at rate cells a
// second: started with npeers linked peers at the same rate, it is read
// after span. The idle figure of run is its anchor (no links, no cover).
func runDecoys(bin, tmp string, rate float64, npeers int, span time.Duration) error {
	r := fmt.Sprint(rate)
	m, err := start(bin, filepath.Join(tmp, "decoys"), "--decoy-rate", r)
	if err != nil {
		return err
	}
	defer m.stop()
	st, err := m.status()
	if err != nil {
		return err
	}
	var others []*node
	defer func() {
		for _, o := range others {
			o.stop()
		}
	}()
	for i := range npeers {
		o, err := start(bin, filepath.Join(tmp, fmt.Sprint("dpeer", i)), "--peer", st.Listen+"#"+st.Fingerprint, "--decoy-rate", r)
		if err != nil {
			return err
		}
		others = append(others, o)
	}
	time.Sleep(span)
	after, _ := m.status()
	fmt.Printf("decoys: %d links at %s cells/s; %d cover cells sent, %d received in %v\n",
		after.Cells.Links, r, after.Cells.SentCover, after.Cells.ReceivedCover, span)
	report(fmt.Sprintf("decoys %s/s, %d links", r, after.Cells.Links), m.cmd.Process.Pid, loadBudgetMiB)
	return nil
}
