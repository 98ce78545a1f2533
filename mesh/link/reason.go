package link

import (
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// ClosedBy reports whether err is the peer closing the connection with
// code.
func ClosedBy(err error, code quic.ApplicationErrorCode) bool {
	var app *quic.ApplicationError
	return errors.As(err, &app) && app.Remote && app.ErrorCode == code
}

// EndReason says in a few words why a connection ended, for logs: the
// peer's stated reason, an idle timeout, or the error itself.
func EndReason(err error) string {
	var app *quic.ApplicationError
	if errors.As(err, &app) {
		if app.ErrorMessage != "" {
			return app.ErrorMessage
		}
		return fmt.Sprintf("closed with code %d", app.ErrorCode)
	}
	var idle *quic.IdleTimeoutError
	if errors.As(err, &idle) {
		return "idle timeout"
	}
	if err == nil {
		return "closed"
	}
	return err.Error()
}
