package dps

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrTimeout reports a registration that did not finish within the
// client's Timeout.
var ErrTimeout = errors.New("DPS registration timed out")

// Error is DPS refusing a request (HTTPStatus set) or ending a registration
// as failed or disabled (Status set). Code and Message are DPS's errorCode
// and message.
type Error struct {
	HTTPStatus int
	Status     string
	Code       int
	Message    string
	TrackingID string
	// Hint says what an operator can do about it; it may be empty.
	Hint string
}

func (e *Error) Error() string {
	var s string
	if e.Status != "" {
		s = "registration " + e.Status
	} else {
		s = fmt.Sprintf("DPS answered %d %s", e.HTTPStatus, http.StatusText(e.HTTPStatus))
	}
	if e.Code != 0 {
		s += fmt.Sprintf(" (errorCode %d)", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.TrackingID != "" {
		s += " [trackingId " + e.TrackingID + "]"
	}
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// transient reports whether the request may succeed when tried again:
// throttling and server errors, as the C SDK treats every status ≥ 429
// (docs/dps-protocol.md#errors).
func (e *Error) transient() bool {
	return e.HTTPStatus == http.StatusTooManyRequests || e.HTTPStatus >= 500
}
