package workload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"unicode/utf8"
)

// Error is an error answer of the workload API: its status and the text
// of its {"message": ...} body (docs/edge-protocol.md#workload-api).
type Error struct {
	Status  int
	Message string
}

// Error returns the status and message.
func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("workload API answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("workload API answered %d: %s", e.Status, e.Message)
}

// errResponse is a success answer that does not hold what it should.
var errResponse = errors.New("malformed workload API answer")

// maxMessage bounds a message taken from a body that is not the error
// JSON.
const maxMessage = 200

// parseError makes an *Error of a status and body; a body that is not
// {"message": "..."} becomes the message, shortened.
func parseError(status int, body []byte) *Error {
	var b struct {
		Message *string `json:"message"`
	}
	if json.Unmarshal(body, &b) == nil && b.Message != nil {
		return &Error{Status: status, Message: *b.Message}
	}
	msg := bytes.TrimSpace(body)
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
		for len(msg) > 0 && !utf8.Valid(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	return &Error{Status: status, Message: string(bytes.ToValidUTF8(msg, []byte("\uFFFD")))}
}

// parseDigest reads {"digest": "<base64 HMAC-SHA256>"} (docs/edge-protocol.md#workload-api). The length
// is checked: a digest of another size would make a token that fails late
// and obscurely at edgeHub.
func parseDigest(body []byte) ([]byte, error) {
	var rsp struct {
		Digest *string `json:"digest"`
	}
	if err := json.Unmarshal(body, &rsp); err != nil {
		return nil, fmt.Errorf("%w: %v", errResponse, err)
	}
	if rsp.Digest == nil {
		return nil, fmt.Errorf("%w: no digest", errResponse)
	}
	d, err := base64.StdEncoding.DecodeString(*rsp.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: digest is not base64", errResponse)
	}
	if len(d) != sha256.Size {
		return nil, fmt.Errorf("%w: digest is %d bytes, want %d", errResponse, len(d), sha256.Size)
	}
	return d, nil
}

// parseTrustBundle reads {"certificate": "<PEM>"}: PEM text itself, not
// base64 of it, whatever the swagger says (docs/edge-protocol.md#workload-api).
func parseTrustBundle(body []byte) ([]byte, error) {
	var rsp struct {
		Certificate *string `json:"certificate"`
	}
	if err := json.Unmarshal(body, &rsp); err != nil {
		return nil, fmt.Errorf("%w: %v", errResponse, err)
	}
	if rsp.Certificate == nil {
		return nil, fmt.Errorf("%w: no certificate", errResponse)
	}
	bundle := []byte(*rsp.Certificate)
	n := 0
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("%w: trust bundle certificate %d: %v", errResponse, n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: trust bundle holds no certificate", errResponse)
	}
	return bundle, nil
}

// retryable reports whether a failed request got no answer from
// aziot-edged, which is worth retrying (docs/edge-protocol.md#workload-api): the socket
// is missing or refuses while aziot-edged restarts, the connection was
// closed before a byte of answer (the ten-connection cap), the attempt
// timed out, or the answer was cut off. A socket that cannot be opened
// for another reason (permissions, not a socket) is not retried.
func retryable(err error, answered bool) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
			// A Unix socket with a full accept backlog.
			errors.Is(err, syscall.EAGAIN)
	}
	return !answered || cutOff(err)
}

// cutOff reports whether err is a connection that ended mid-answer.
func cutOff(err error) bool {
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.EPIPE, syscall.ECONNABORTED} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
