package dpsemu

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// errorCode values. 401002, 400004, 404201, 400208 and 400209 are seen in
// real DPS responses or SDK sources (docs/dps-protocol.md#registering-and-polling, #errors); the others
// follow the same HTTP status + 3 digits pattern, chosen here where no
// source gives the real value.
const (
	codeBadRequest   = 400001
	codeBadKey       = 400004
	codeHubNotLinked = 400208 // C DPS_HUB_ERROR_NO_HUB
	codeAllocation   = 400209 // C DPS_HUB_ERROR_UNAUTH, seen for allocation failures
	codeUnauthorized = 401002
	codeDisabled     = 401003
	codeNotFound     = 404001
	codeNoEnrollment = 404201
	codeNoOperation  = 404202
	codeMethod       = 405001
	codeConflict     = 409201 // [UNCONFIRMED] an enrollment that exists, in a bulk create
	codePrecondition = 412002
	codeThrottled    = 429001 // IoT Hub's code for throttling
	codeInternal     = 500001
	codeUnavailable  = 503001
)

// Messages clients or people match on; the EK one is real DPS's
// (docs/dps-protocol.md#request-bodies, #errors) and the challenge one is from a captured 401 (docs/dps-protocol.md#the-challenge).
const (
	msgUnauthorized     = "Unauthorized"
	msgEndorsementKey   = "Endorsement key is invalid, or does not match the Enrollment."
	msgChallenge        = "Authorization required, resend request using supplied key"
	msgStorageRootKey   = "Storage root key is invalid."
	msgEnrollmentAbsent = "Enrollment not found."
	msgEnrollmentExists = "Enrollment already exists."
	msgETag             = "The ETag does not match the enrollment's."
)

const (
	maxRequestBody  = 256 << 10
	contentTypeJSON = "application/json; charset=utf-8"
	// Header names as DPS writes them, lowercase (docs/dps-protocol.md#endpoints-and-headers).
	headerRequestID  = "x-ms-request-id"
	headerErrorCode  = "x-ms-error-code"
	headerRetryAfter = "retry-after"
)

// writeJSON writes v with the headers DPS sends (docs/dps-protocol.md#endpoints-and-headers). The
// request ID header goes in lowercase, as DPS writes it; Content-Type is
// set canonically so net/http does not add a sniffed one.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any, requestID string) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own types are written; this cannot happen.
		panic(fmt.Sprintf("dpsemu: encode response: %v", err))
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	if requestID == "" {
		requestID = s.uuid()
	}
	h[headerRequestID] = []string{requestID}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeError writes the DPS error body, its trackingId equal to
// x-ms-request-id (docs/dps-protocol.md#errors).
func (s *Server) writeError(w http.ResponseWriter, status, code int, msg string) {
	id := s.uuid()
	w.Header()[headerErrorCode] = []string{strconv.Itoa(code)}
	s.writeJSON(w, status, dpsservice.ErrorBody{ErrorCode: code, TrackingID: id, Message: msg, TimestampUTC: s.now()}, id)
}

// setRetryAfter sets the header under its lowercase name: the C SDK looks
// it up case-sensitively (docs/dps-protocol.md#endpoints-and-headers), and Header.Set would write
// Retry-After.
func setRetryAfter(w http.ResponseWriter, seconds int) {
	w.Header()[headerRetryAfter] = []string{strconv.Itoa(seconds)}
}

// readBody reads a JSON request body into v.
func readBody(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(data) > maxRequestBody {
		return fmt.Errorf("request body over %d bytes", maxRequestBody)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("request body is not valid: %w", err)
	}
	return nil
}

func (s *Server) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return nil, fmt.Errorf("random bytes: %w", err)
	}
	return b, nil
}

// uuid returns a random (version 4) UUID, the form of tracking IDs; a
// failed random source gives the nil UUID rather than no response.
func (s *Server) uuid() string {
	b, err := s.random(16)
	if err != nil {
		b = make([]byte, 16)
	} else {
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// operationID has the shape of real ones, "4.<16 hex>.<uuid>"
// (docs/dps-protocol.md#registering-and-polling).
func (s *Server) operationID() (string, error) {
	b, err := s.random(8)
	if err != nil {
		return "", err
	}
	return "4." + hex.EncodeToString(b) + "." + s.uuid(), nil
}

// enrollmentETag is quoted, as HTTP ETags are.
func (s *Server) enrollmentETag() string { return `"` + s.uuid() + `"` }

// registrationETag copies the real form: base64 of a quoted ID (the
// "IjZkMDBm…" of docs/dps-protocol.md#registering-and-polling).
func (s *Server) registrationETag() string {
	return base64.StdEncoding.EncodeToString([]byte(`"` + s.uuid() + `"`))
}
