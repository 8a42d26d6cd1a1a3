// Package azrest makes one call to an Azure service REST API (DPS, IoT
// Hub) authenticated by a SAS token (a shared access policy's, or a
// device's for its own module identities): the token in Authorization,
// JSON in and out, If-Match passed on, and a bounded read of the answer.
// The callers map its status codes to their own errors.
package azrest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// maxBody bounds what is read from a response.
const maxBody = 4 << 20

// Request is one call.
type Request struct {
	Method, URL string
	// IfMatch, when not empty, is sent as If-Match (an ETag, or "*").
	IfMatch string
	// Body, when not nil, is sent as JSON.
	Body []byte
	// Header holds further request headers (x-ms-max-item-count, …).
	Header http.Header
}

// Response is the answer, whatever its status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends r with token in Authorization, through hc (nil:
// http.DefaultClient), and returns the answer, whatever its status.
func Do(ctx context.Context, hc *http.Client, token string, r Request) (*Response, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", token)
	req.Header.Set("Accept", "application/json")
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if r.IfMatch != "" {
		req.Header.Set("If-Match", r.IfMatch)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}
