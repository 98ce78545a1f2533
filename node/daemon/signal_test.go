package daemon_test

import "os"

// interruptSignal stops tshark so that it flushes what it captured.
var interruptSignal = os.Interrupt
