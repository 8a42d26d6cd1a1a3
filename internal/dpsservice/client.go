package dpsservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/edgetpm/edgetpm/internal/azrest"
)

// tokenTTL is the life of the SAS token on each request; the C service
// client uses an hour too (provisioning_service_client.c).
const tokenTTL = time.Hour

// Client calls the DPS service API with a shared access policy. Its zero
// value is not usable: set Conn. A Client is safe for concurrent use.
type Client struct {
	Conn ConnectionString
	// Endpoint is the service base URL; empty means "https://" + Conn.HostName.
	Endpoint string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
}

// PutEnrollment creates or replaces the enrollment e.RegistrationID and
// returns it as stored. A non-empty ifMatch (an ETag, or "*") makes DPS
// refuse with 412 when the stored enrollment has another ETag.
func (c *Client) PutEnrollment(ctx context.Context, e Enrollment, ifMatch string) (*Enrollment, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("put enrollment %q: %w", e.RegistrationID, err)
	}
	var out Enrollment
	if err := c.do(ctx, http.MethodPut, e.RegistrationID, ifMatch, body, &out); err != nil {
		return nil, fmt.Errorf("put enrollment %q: %w", e.RegistrationID, err)
	}
	return &out, nil
}

// GetEnrollment returns the enrollment registrationID.
func (c *Client) GetEnrollment(ctx context.Context, registrationID string) (*Enrollment, error) {
	var out Enrollment
	if err := c.do(ctx, http.MethodGet, registrationID, "", nil, &out); err != nil {
		return nil, fmt.Errorf("get enrollment %q: %w", registrationID, err)
	}
	return &out, nil
}

// DeleteEnrollment deletes the enrollment registrationID; ifMatch works as
// in PutEnrollment.
func (c *Client) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	if err := c.do(ctx, http.MethodDelete, registrationID, ifMatch, nil, nil); err != nil {
		return fmt.Errorf("delete enrollment %q: %w", registrationID, err)
	}
	return nil
}

// do sends one request and decodes a 2xx body into out (when non-nil);
// other statuses become a *ServiceError.
func (c *Client) do(ctx context.Context, method, registrationID, ifMatch string, body []byte, out any) error {
	if registrationID == "" {
		return errors.New("empty registration ID")
	}
	if c.Conn.HostName == "" || len(c.Conn.Key) == 0 {
		return errors.New("no service connection string")
	}
	endpoint := c.Endpoint
	if endpoint == "" {
		endpoint = "https://" + c.Conn.HostName
	}
	u := endpoint + "/enrollments/" + url.PathEscape(registrationID) + "?api-version=" + APIVersion
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	// sr = HostName (docs/dps-protocol.md#service-api).
	token, err := c.Conn.Token(ctx, now().Add(tokenTTL))
	if err != nil {
		return err
	}
	status, data, err := azrest.Do(ctx, c.HTTP, token, azrest.Request{Method: method, URL: u, IfMatch: ifMatch, Body: body})
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return ParseError(status, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
