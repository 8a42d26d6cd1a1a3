package dpsservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgetpm/edgetpm/internal/azrest"
	"github.com/edgetpm/edgetpm/internal/backoff"
)

// A throttled request (429, or 503) is tried up to maxAttempts times; a
// retry-after longer than maxRetryAfter is cut to it.
const (
	maxAttempts   = 10
	maxRetryAfter = time.Minute
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
	// OnRetry, when set, is told of each throttled answer and the wait
	// before the request is sent again; ctx is the call's.
	OnRetry func(ctx context.Context, status int, wait time.Duration)
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

// do sends one request to /enrollments/{registrationID} and decodes a 2xx
// body into out (when non-nil); other statuses become a *ServiceError.
func (c *Client) do(ctx context.Context, method, registrationID, ifMatch string, body []byte, out any) error {
	if registrationID == "" {
		return errors.New("empty registration ID")
	}
	_, err := c.call(ctx, azrest.Request{Method: method, URL: "/enrollments/" + url.PathEscape(registrationID), IfMatch: ifMatch, Body: body}, out)
	return err
}

// call sends r, whose URL is a path below the endpoint, and decodes a 2xx
// body into out (when non-nil). It retries 429 and 503 after the answer's
// retry-after (or a backoff when it has none) until maxAttempts or ctx
// ends; other statuses become a *ServiceError.
func (c *Client) call(ctx context.Context, r azrest.Request, out any) (*azrest.Response, error) {
	if c.Conn.HostName == "" || len(c.Conn.Key) == 0 {
		return nil, errors.New("no service connection string")
	}
	endpoint := c.Endpoint
	if endpoint == "" {
		endpoint = "https://" + c.Conn.HostName
	}
	r.URL = endpoint + r.URL + "?api-version=" + APIVersion
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	b := backoff.Backoff{Base: time.Second, Max: maxRetryAfter}
	for attempt := 1; ; attempt++ {
		// sr = HostName (docs/dps-protocol.md#service-api).
		token, err := c.Conn.Token(ctx, now().Add(tokenTTL))
		if err != nil {
			return nil, err
		}
		resp, err := azrest.Do(ctx, c.HTTP, token, r)
		if err != nil {
			return nil, err
		}
		if resp.Status >= 200 && resp.Status <= 299 {
			if out != nil {
				if err := json.Unmarshal(resp.Body, out); err != nil {
					return nil, fmt.Errorf("decode response: %w", err)
				}
			}
			return resp, nil
		}
		if (resp.Status != http.StatusTooManyRequests && resp.Status != http.StatusServiceUnavailable) || attempt == maxAttempts {
			return nil, ParseError(resp.Status, resp.Body)
		}
		wait := b.Next()
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			wait = min(time.Duration(s)*time.Second, maxRetryAfter)
		}
		if c.OnRetry != nil {
			c.OnRetry(ctx, resp.Status, wait)
		}
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}
