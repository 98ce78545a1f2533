package e2e

// Limits for the external test in limits_test.go.
const (
	PadBlockForTest   = padBlock
	MaxBodyForTest    = maxBody
	MaxPayloadForTest = maxPayload
)
