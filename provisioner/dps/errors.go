package dps

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
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

// ErrInsecureEndpoint is a DPS endpoint, or a redirect, that is not https.
// Over plain http the TPM-signed registration token travels in clear, and
// whoever is on the path can answer "assigned" to a hub of its choosing
// with an activation blob built from the very EK and SRK the device sent:
// the device would then take that hub's key as its identity.
var ErrInsecureEndpoint = errors.New("plain http would carry the TPM-signed registration token in clear and let anyone on the path assign the device to a hub of their choosing")

// CheckEndpoint checks that endpoint is an https URL with a host. It is the
// one check every place a DPS endpoint enters uses: the settings, an
// aziot config.toml, and Client itself.
func CheckEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errors.New("DPS endpoint is not an https URL (want https://HOST)")
	}
	// A password in the URL stays out of the error, and so out of logs.
	shown := u.Redacted()
	switch {
	case strings.EqualFold(u.Scheme, "http"):
		return fmt.Errorf("DPS endpoint %q is not https: %w", shown, ErrInsecureEndpoint)
	case !strings.EqualFold(u.Scheme, "https"):
		return fmt.Errorf("DPS endpoint %q is not an https URL", shown)
	}
	return nil
}
