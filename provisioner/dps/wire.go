package dps

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrResponse reports a DPS answer this client cannot understand.
var ErrResponse = errors.New("malformed DPS response")

// registerBody is the body of both register PUTs (docs/dps-protocol.md#request-bodies):
// like the C, Node and C# SDKs, the signed PUT repeats the tpm field.
type registerBody struct {
	RegistrationID string          `json:"registrationId"`
	TPM            tpmKeys         `json:"tpm"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

type tpmKeys struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey"`
}

// challenge is the body of the 401 answer to the first PUT (docs/dps-protocol.md#the-challenge).
type challenge struct {
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

// parseChallenge returns the activation blob and the key name to sign
// with, or nil when the 401 carries no challenge (no enrollment, docs/dps-protocol.md#errors).
func parseChallenge(data []byte) (blob []byte, keyName string, err error) {
	var c challenge
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, "", fmt.Errorf("%w: challenge: %w", ErrResponse, err)
	}
	if c.AuthenticationKey == "" {
		return nil, "", nil
	}
	blob, err = base64.StdEncoding.DecodeString(c.AuthenticationKey)
	if err != nil || len(blob) == 0 {
		return nil, "", fmt.Errorf("%w: challenge authenticationKey is not base64", ErrResponse)
	}
	// The C SDK signs with the keyName it is given; DPS always says
	// "registration", which the other SDKs hard-code.
	if c.KeyName == "" {
		c.KeyName = "registration"
	}
	if !validName(c.KeyName, 64) {
		return nil, "", fmt.Errorf("%w: challenge keyName %q", ErrResponse, c.KeyName)
	}
	return blob, c.KeyName, nil
}

// Registration status vocabulary (docs/dps-protocol.md#registering-and-polling).
const (
	statusUnassigned = "unassigned"
	statusAssigning  = "assigning"
	statusAssigned   = "assigned"
	statusFailed     = "failed"
	statusDisabled   = "disabled"
)

// operation is the body of the signed PUT's 202 and of the polls (docs/dps-protocol.md#registering-and-polling).
type operation struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState"`
}

type registrationState struct {
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus"`
	ErrorCode      code            `json:"errorCode"`
	ErrorMessage   string          `json:"errorMessage"`
	LastUpdated    string          `json:"lastUpdatedDateTimeUtc"`
	Payload        json.RawMessage `json:"payload"`
	TPM            *struct {
		AuthenticationKey string `json:"authenticationKey"`
	} `json:"tpm"`
}

// parseOperation parses and checks an operation body, so that what it
// returns can be acted on: an assigned result has a usable hub, device ID
// and key blob.
func parseOperation(data []byte) (*operation, error) {
	var op operation
	if err := json.Unmarshal(data, &op); err != nil {
		return nil, fmt.Errorf("%w: operation: %w", ErrResponse, err)
	}
	switch op.Status {
	case statusAssigning, statusUnassigned:
		if op.OperationID == "" || !validName(op.OperationID, 256) {
			return nil, fmt.Errorf("%w: operation %q is not a usable operation ID", ErrResponse, op.OperationID)
		}
	case statusAssigned:
		rs := op.RegistrationState
		if rs == nil {
			return nil, fmt.Errorf("%w: assigned without registrationState", ErrResponse)
		}
		if !validHost(rs.AssignedHub) {
			return nil, fmt.Errorf("%w: assignedHub %q is not a host name", ErrResponse, rs.AssignedHub)
		}
		if !validDeviceID(rs.DeviceID) {
			return nil, fmt.Errorf("%w: deviceId %q is not an IoT Hub device ID", ErrResponse, rs.DeviceID)
		}
		// Mandatory for TPM: the C, C# and Node SDKs fail without it (docs/dps-protocol.md#registering-and-polling).
		if rs.TPM == nil || rs.TPM.AuthenticationKey == "" {
			return nil, fmt.Errorf("%w: assigned without registrationState.tpm.authenticationKey", ErrResponse)
		}
		if _, err := base64.StdEncoding.DecodeString(rs.TPM.AuthenticationKey); err != nil {
			return nil, fmt.Errorf("%w: registrationState.tpm.authenticationKey is not base64", ErrResponse)
		}
	case statusFailed, statusDisabled:
	default:
		return nil, fmt.Errorf("%w: unknown registration status %q", ErrResponse, op.Status)
	}
	return &op, nil
}

// code is a DPS errorCode: a number, which some proxies and older
// services send as a string.
type code int

func (c *code) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("errorCode %s is not a number", b)
	}
	*c = code(n)
	return nil
}

// errorBody is DPS's error document (docs/dps-protocol.md#errors).
type errorBody struct {
	ErrorCode  code   `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

// parseError turns a non-2xx answer into an *Error. It never fails: a body
// that is not DPS's error document still gives the HTTP status.
func parseError(status int, requestID string, data []byte) *Error {
	e := &Error{HTTPStatus: status, TrackingID: requestID}
	var b errorBody
	if json.Unmarshal(data, &b) == nil {
		e.Code, e.Message = int(b.ErrorCode), clean(b.Message)
		if b.TrackingID != "" {
			e.TrackingID = b.TrackingID
		}
	}
	e.TrackingID = clean(e.TrackingID)
	return e
}

// clean keeps a server's text printable and short, so that a hostile or
// broken server cannot flood a terminal or a log.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

// parseTime parses DPS's UTC timestamps (RFC 3339 with up to 7 fraction
// digits); the zero time when absent or malformed.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// validHost accepts a DNS host name, as IoT Hub names are.
func validHost(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// validDeviceID applies IoT Hub's device ID rules: up to 128 ASCII letters,
// digits and - . % _ * ? ! ( ) , : = @ $ '.
func validDeviceID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.%_*?!(),:=@$'", r)) {
			return false
		}
	}
	return true
}

// validName accepts printable ASCII without spaces, '/', '?', '#' or '%':
// what may go into a URL path segment or a token field unescaped.
func validName(s string, max int) bool {
	if len(s) > max {
		return false
	}
	return !bytes.ContainsFunc([]byte(s), func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune("/?#%&", r)
	})
}
