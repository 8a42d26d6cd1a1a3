package workload

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// DefaultAPIVersion is the workload api-version used when
// IOTEDGE_APIVERSION is empty: edgeAgent always sets it, but the SDKs
// treat it as optional, and docs/edge-protocol.md#module-environment recommends this default
// (the Node and C SDKs hard-code 2018-06-28; every route used here accepts
// any known version, docs/edge-protocol.md#workload-api).
const DefaultAPIVersion = "2019-01-30"

const (
	// requestTimeout bounds one attempt; a hung attempt counts as no
	// reply and is retried.
	requestTimeout = 10 * time.Second
	// serverErrorRetries is how many times a 5xx is retried: aziot-edged
	// answers 500 while identityd or keyd is unavailable, which a
	// restart heals, but a 500 can also be permanent (an unknown module).
	serverErrorRetries = 3
	// maxResponse bounds a response body; a trust bundle is a few KiB.
	maxResponse = 1 << 20
)

// Client calls the workload API for one module identity.
type Client struct {
	module     string
	signPath   string
	bundlePath string
	hc         *http.Client
	timeout    time.Duration
	backoff    backoff.Backoff
}

// The SAS token builder takes the Client as its signer.
var _ sas.Signer = (*Client)(nil)

// New returns a client of the workload socket at uri
// (IOTEDGE_WORKLOADURI, unix:///var/run/iotedge/workload.sock) for the
// module moduleID (IOTEDGE_MODULEID) of generation generationID
// (IOTEDGE_MODULEGENERATIONID), speaking apiVersion (IOTEDGE_APIVERSION,
// DefaultAPIVersion when empty). Only unix:// URIs are supported: that is
// all aziot-edged serves to modules (docs/edge-protocol.md#module-environment).
func New(uri, moduleID, generationID, apiVersion string) (*Client, error) {
	socket, err := socketPath(uri)
	if err != nil {
		return nil, err
	}
	if moduleID == "" {
		return nil, errors.New("workload client: module ID is empty")
	}
	if generationID == "" {
		return nil, errors.New("workload client: generation ID is empty")
	}
	if apiVersion == "" {
		apiVersion = DefaultAPIVersion
	}
	// Path segments escaped like the SDKs' encodeURIComponent ($edgeHub →
	// %24edgeHub); aziot-edged percent-decodes them (docs/edge-protocol.md#workload-api).
	query := "?api-version=" + sas.Escape(apiVersion)
	return &Client{
		module:     moduleID,
		signPath:   "/modules/" + sas.Escape(moduleID) + "/genid/" + sas.Escape(generationID) + "/sign" + query,
		bundlePath: "/trust-bundle" + query,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dial(ctx, socket)
			},
			// An idle connection would hold one of the socket's ten slots.
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 64 << 10,
			// Proxy stays nil: HTTP_PROXY must not capture a local socket.
		}},
		timeout: requestTimeout,
		// The cap frees within a request's time and aziot-edged restarts
		// in seconds: start short, stay under a few seconds.
		backoff: backoff.Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second},
	}, nil
}

// socketPath returns the socket file of a unix:///path URI.
func socketPath(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("workload URI %q: %w", uri, err)
	}
	if u.Scheme != "unix" {
		return "", fmt.Errorf("workload URI %q: scheme %q is not supported, want unix:///path/to/workload.sock", uri, u.Scheme)
	}
	if u.Opaque != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("workload URI %q: want unix:///absolute/path", uri)
	}
	return u.Path, nil
}

type signRequest struct {
	KeyID string `json:"keyId"`
	Algo  string `json:"algo"`
	Data  string `json:"data"`
}

// Sign returns HMAC-SHA256 over data with the module's identity key, as
// computed by aziot-keyd behind the workload API (docs/edge-protocol.md#workload-api). It retries until
// ctx ends while the socket gives no reply.
func (c *Client) Sign(ctx context.Context, data []byte) ([]byte, error) {
	// keyId and algo are ignored by aziot-edged but required by the older
	// swaggers, and every SDK sends them (docs/edge-protocol.md#workload-api).
	body, err := json.Marshal(signRequest{KeyID: "primary", Algo: "HMACSHA256", Data: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		return nil, err
	}
	rsp, err := c.do(ctx, http.MethodPost, c.signPath, body, http.StatusOK)
	if err == nil {
		var d []byte
		if d, err = parseDigest(rsp); err == nil {
			return d, nil
		}
	}
	return nil, fmt.Errorf("sign as module %s with the workload API: %w", c.module, err)
}

// TrustBundle returns the PEM certificates that edgeHub's server
// certificate chains to (docs/edge-protocol.md#workload-api), checked to hold at least one certificate.
func (c *Client) TrustBundle(ctx context.Context) ([]byte, error) {
	rsp, err := c.do(ctx, http.MethodGet, c.bundlePath, nil, http.StatusOK)
	if err == nil {
		var b []byte
		if b, err = parseTrustBundle(rsp); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("get trust bundle from the workload API: %w", err)
}

// do sends a request until it gets an answer that is not worth retrying
// and returns the body of a want answer, or an *Error.
func (c *Client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	b := c.backoff
	serverErrors := 0
	for {
		rsp, retry, err := c.roundTrip(ctx, method, path, body, want)
		if err == nil {
			return rsp, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		var werr *Error
		if errors.As(err, &werr) && werr.Status >= 500 {
			if serverErrors == serverErrorRetries {
				return nil, err
			}
			serverErrors++
		} else if !retry {
			return nil, err
		}
		if serr := backoff.Sleep(ctx, b.Next()); serr != nil {
			return nil, fmt.Errorf("%w; last failure: %w", serr, err)
		}
	}
}

// roundTrip makes one attempt; retry tells whether its failure means
// aziot-edged gave no answer (see retryable).
func (c *Client) roundTrip(ctx context.Context, method, path string, body []byte, want int) (data []byte, retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	a := &attempt{}
	// The host is not looked at (docs/edge-protocol.md#workload-api); the path carries everything.
	req, err := http.NewRequestWithContext(context.WithValue(ctx, attemptKey{}, a), method, "http://workload"+path, rd)
	if err != nil {
		return nil, false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rsp, err := c.hc.Do(req)
	if err != nil {
		return nil, retryable(err, a.answered.Load()), err
	}
	defer rsp.Body.Close()
	data, err = io.ReadAll(io.LimitReader(rsp.Body, maxResponse+1))
	if err != nil {
		return nil, cutOff(err), fmt.Errorf("read workload API answer: %w", err)
	}
	if len(data) > maxResponse {
		return nil, false, fmt.Errorf("%w: answer larger than %d bytes", errResponse, maxResponse)
	}
	if rsp.StatusCode != want {
		return nil, false, parseError(rsp.StatusCode, data)
	}
	return data, false, nil
}

// attempt records whether the server sent anything on an attempt's
// connection: net/http reports a connection closed before the answer in
// several ways (io.EOF, ECONNRESET, an unexported "server closed idle
// connection" when the close races the request), so whether a byte came
// back is the reliable sign of the cap's silent close.
type attempt struct{ answered atomic.Bool }

type attemptKey struct{}

// dial connects to the socket; the connection notes in the request's
// attempt when the server sends something.
func dial(ctx context.Context, socket string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	// The dial context keeps the request's values (net/http detaches only
	// its cancellation).
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		return &answerConn{Conn: conn, a: a}, nil
	}
	return conn, nil
}

type answerConn struct {
	net.Conn
	a *attempt
}

func (c *answerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.a.answered.Store(true)
	}
	return n, err
}
