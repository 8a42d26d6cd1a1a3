package hubemu

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrPreconditionFailed: a twin update's If-Match names another ETag
// than the twin's (IoT Hub: 412 PreconditionFailed).
var ErrPreconditionFailed = errors.New("precondition failed: the twin has another ETag")

// etag is the twin's ETag: its change count as 8 bytes, big-endian, in
// base64, the form IoT Hub's twin ETags take ("AAAAAAAAAAE=" for a new
// twin). It changes with every change of desired or reported properties
// or tags.
func (t *twinState) etag() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.version))
	return base64.StdEncoding.EncodeToString(b[:])
}

// match checks a twin update's If-Match: "" or "*" match any twin, else
// it must be the twin's ETag (ifMatch took off its quotes).
func (t *twinState) match(ifMatch string) error {
	if ifMatch == "" || ifMatch == "*" || ifMatch == t.etag() {
		return nil
	}
	return fmt.Errorf("%w (If-Match %.40q, ETag %q)", ErrPreconditionFailed, ifMatch, t.etag())
}
