package dpsservice

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrorBody is the JSON body of a DPS error response (docs/dps-protocol.md#errors).
// Responses carry the tracking ID in the x-ms-request-id header too.
type ErrorBody struct {
	ErrorCode    int       `json:"errorCode"`
	TrackingID   string    `json:"trackingId"`
	Message      string    `json:"message"`
	TimestampUTC time.Time `json:"timestampUtc"`
}

// ServiceError is an error response from DPS.
type ServiceError struct {
	// HTTPStatus is the response status code.
	HTTPStatus int
	// Code is the six-digit errorCode of the body (401002, 400004, …); 0
	// when the body had none.
	Code       int
	Message    string
	TrackingID string
}

func (e *ServiceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DPS answered HTTP %d", e.HTTPStatus)
	if e.Code != 0 {
		fmt.Fprintf(&b, ", error %d", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.TrackingID != "" {
		b.WriteString(" (tracking ID " + e.TrackingID + ")")
	}
	return b.String()
}

// ParseError makes a ServiceError from a response status and body. A body
// that is not the error JSON becomes the message, shortened.
func ParseError(status int, body []byte) *ServiceError {
	e := &ServiceError{HTTPStatus: status}
	var raw struct {
		// Some services quote the code; take either form.
		ErrorCode  json.RawMessage `json:"errorCode"`
		TrackingID string          `json:"trackingId"`
		Message    string          `json:"message"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		e.Message = clipMessage(string(bytes.TrimSpace(body)))
		return e
	}
	if n, err := strconv.Atoi(strings.Trim(string(raw.ErrorCode), `"`)); err == nil {
		e.Code = n
	}
	e.TrackingID = clipMessage(raw.TrackingID)
	e.Message = clipMessage(raw.Message)
	return e
}

func clipMessage(s string) string {
	const max = 512
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
