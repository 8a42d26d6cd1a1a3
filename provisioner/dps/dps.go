// Package dps registers a device with the Azure IoT Hub Device Provisioning
// Service by TPM attestation over HTTPS (docs/dps-protocol.md): it sends
// the TPM's endorsement and storage root keys, proves possession of the TPM
// by activating DPS's challenge inside it, polls the registration and
// imports the IoT hub device key DPS returns into the TPM's auth key slot.
//
// Unlike Azure's SDKs, the challenge key is never persisted: a registration
// that fails at any step leaves the device's previous key as it was.
package dps

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// Defaults of a Client.
const (
	GlobalEndpoint      = "https://global.azure-devices-provisioning.net"
	APIVersion          = "2021-06-01" // what the C SDK and IoT Edge send (docs/dps-protocol.md#endpoints-and-headers)
	DefaultPollInterval = 2 * time.Second
	DefaultTimeout      = 5 * time.Minute
	// maxRetryAfter bounds a server's retry-after, as the C SDK does (docs/dps-protocol.md#registering-and-polling).
	maxRetryAfter = 300 * time.Second
	// maxBody bounds what is read of any answer.
	maxBody = 1 << 20
)

// Device is the TPM side of a registration; *tpm.TPM is one.
type Device interface {
	// SignChallenge activates DPS's challenge blob and signs data with the
	// key it carries, without keeping the key.
	SignChallenge(ctx context.Context, blob, data []byte) ([]byte, error)
	// ImportKey activates the blob of the IoT hub device key and makes it
	// the device's auth key.
	ImportKey(ctx context.Context, blob []byte) error
}

// Client registers devices with one DPS instance. The zero value with
// IDScope set talks to the global endpoint. A Client is safe for concurrent
// use if its fields are not changed.
type Client struct {
	IDScope string
	// Endpoint is the DPS device endpoint; empty means GlobalEndpoint.
	Endpoint string
	// HTTP sends the requests; nil means NewHTTPClient(nil).
	HTTP *http.Client
	// APIVersion defaults to APIVersion.
	APIVersion string
	// PollInterval is the wait between polls when DPS sends no usable
	// retry-after; default DefaultPollInterval.
	PollInterval time.Duration
	// Timeout bounds a whole registration, retries and polls included;
	// default DefaultTimeout.
	Timeout time.Duration
	// Log receives one line per step; the zero Logger discards them.
	Log zerolog.Logger
}

// Request is what a device registers with.
type Request struct {
	RegistrationID string
	// EndorsementKey and StorageRootKey are marshalled TPM2B_PUBLIC areas,
	// as tpm.Identity returns them.
	EndorsementKey, StorageRootKey []byte
	// Payload is optional JSON passed to custom allocation and echoed back.
	Payload json.RawMessage
}

// Result is a successful registration.
type Result struct {
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus"`
	OperationID    string          `json:"operationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	// AssignedAt is DPS's lastUpdatedDateTimeUtc, or the local time when
	// DPS sent none.
	AssignedAt time.Time `json:"assignedAt"`
	Timing     Timing    `json:"timing"`
}

// Timing splits where a registration spent its time.
type Timing struct {
	TPM      time.Duration `json:"tpm"`
	HTTP     time.Duration `json:"http"`
	Wait     time.Duration `json:"wait"`
	Requests int           `json:"requests"`
	Polls    int           `json:"polls"`
}

// Register runs the whole TPM attestation flow of docs/dps-protocol.md#the-flow for req and,
// once DPS has assigned the device, imports the IoT hub device key into dev.
// Throttling, server errors and network failures are retried until the
// Timeout; a refusal is returned as an *Error; running out of time as
// ErrTimeout. Before the hub key is imported dev's previous key is untouched.
func (c *Client) Register(ctx context.Context, dev Device, req Request) (*Result, error) {
	if err := c.check(req); err != nil {
		return nil, err
	}
	timeout := orDefault(c.Timeout, DefaultTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %v", ErrTimeout, timeout))
	defer cancel()
	r := &registration{Client: c, dev: dev, req: req, start: time.Now()}
	res, err := r.run(ctx)
	if err != nil {
		return nil, r.failed(ctx, "register", err)
	}
	return res, nil
}

// Challenge asks DPS for the challenge of req's registration, the first
// step of Register, and stops there: DPS challenges a registration ID only
// when it has an enrollment for it with req's endorsement key, and nothing
// is registered, so the device's hub key and assignment stay as they were.
// It returns nil when challenged, and an *Error (with a Hint) when DPS
// refuses. The device API says nothing of the enrollment's capabilities,
// IoT Edge's included (docs/dps-protocol.md#registering-and-polling).
func (c *Client) Challenge(ctx context.Context, req Request) error {
	if err := c.check(req); err != nil {
		return err
	}
	timeout := orDefault(c.Timeout, DefaultTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %v", ErrTimeout, timeout))
	defer cancel()
	r := &registration{Client: c, req: req, start: time.Now()}
	body, err := r.body()
	if err == nil {
		_, _, err = r.challenge(ctx, body)
	}
	if err != nil {
		return r.failed(ctx, "challenge", err)
	}
	return nil
}

// failed wraps the error that ended r's action (register or challenge)
// once, with the hints only the whole flow can give.
func (r *registration) failed(ctx context.Context, action string, err error) error {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Code == 400004 && e.Hint == "":
		e.Hint = "the endorsement key does not match the enrollment: enroll the one 'edge-provisioner identity' shows"
	case errors.Is(context.Cause(ctx), ErrTimeout) && !errors.Is(err, ErrTimeout):
		// Our own deadline struck inside a request: say so.
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return fmt.Errorf("%s %q with DPS scope %s during %s: %w", action, r.req.RegistrationID, r.IDScope, r.step, err)
}

func (c *Client) check(req Request) error {
	if err := CheckEndpoint(orDefault(c.Endpoint, GlobalEndpoint)); err != nil {
		return err
	}
	switch {
	case c.IDScope == "" || !validName(c.IDScope, 64):
		return fmt.Errorf("DPS ID scope %q is not valid", c.IDScope)
	case !validRegistrationID(req.RegistrationID):
		return fmt.Errorf("registration ID %q is not valid: up to 128 letters, digits and - . _ :", req.RegistrationID)
	case len(req.EndorsementKey) == 0 || len(req.StorageRootKey) == 0:
		return errors.New("registration needs the TPM's endorsement and storage root keys")
	case req.Payload != nil && !json.Valid(req.Payload):
		return errors.New("registration payload is not JSON")
	}
	return nil
}

// validRegistrationID applies DPS's rule: up to 128 characters, letters,
// digits and - . _ : (case-insensitive).
func validRegistrationID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:", r)) {
			return false
		}
	}
	return true
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// registration is one run of Register.
type registration struct {
	*Client
	dev    Device
	req    Request
	start  time.Time
	step   string
	timing Timing
	token  string
}

// body is the JSON of both registration PUTs.
func (r *registration) body() ([]byte, error) {
	return json.Marshal(registerBody{
		RegistrationID: r.req.RegistrationID,
		TPM: tpmKeys{
			EndorsementKey: base64.StdEncoding.EncodeToString(r.req.EndorsementKey),
			StorageRootKey: base64.StdEncoding.EncodeToString(r.req.StorageRootKey),
		},
		Payload: r.req.Payload,
	})
}

// challenge sends the unauthenticated PUT and returns DPS's activation
// blob and key name.
func (r *registration) challenge(ctx context.Context, body []byte) (blob []byte, keyName string, err error) {
	r.step = "challenge"
	rsp, err := r.send(ctx, http.MethodPut, r.url("register"), body)
	if err != nil {
		return nil, "", err
	}
	if rsp.status != http.StatusUnauthorized {
		return nil, "", fmt.Errorf("%w: the unauthenticated registration was answered %d, not a 401 challenge", ErrResponse, rsp.status)
	}
	blob, keyName, err = parseChallenge(rsp.body)
	if err != nil {
		return nil, "", err
	}
	if blob == nil {
		e := parseError(rsp.status, rsp.requestID, rsp.body)
		e.Hint = "no enrollment for this registration ID in this ID scope: check the scope, and enroll the endorsement key that 'edge-provisioner identity' shows"
		return nil, "", e
	}
	r.Log.Info().Stringer("elapsed", r.elapsed()).Int("blob_bytes", len(blob)).Msg("challenge received")
	return blob, keyName, nil
}

func (r *registration) run(ctx context.Context) (*Result, error) {
	body, err := r.body()
	if err != nil {
		return nil, err
	}
	registerURL := r.url("register")

	blob, keyName, err := r.challenge(ctx, body)
	if err != nil {
		return nil, err
	}

	r.step = "key activation"
	sign := signerFunc(func(ctx context.Context, data []byte) ([]byte, error) {
		t := time.Now()
		defer func() { r.timing.TPM += time.Since(t) }()
		return r.dev.SignChallenge(ctx, blob, data)
	})
	// The token must outlive every poll; C signs for 40 min, C# for a day.
	ttl := max(time.Hour, orDefault(r.Timeout, DefaultTimeout))
	r.token, err = sas.New(ctx, sign, sas.DPSResource(r.IDScope, r.req.RegistrationID), keyName, time.Now().Add(ttl))
	if err != nil {
		return nil, err
	}
	r.Log.Info().Stringer("elapsed", r.elapsed()).Msg("key activated")

	r.step = "registration"
	rsp, err := r.send(ctx, http.MethodPut, registerURL, body)
	if err != nil {
		return nil, err
	}
	op, err := r.operation(rsp)
	if err != nil {
		return nil, err
	}
	r.Log.Info().Stringer("elapsed", r.elapsed()).Str("operation", op.OperationID).Str("status", op.Status).Msg("operation")

	r.step = "polling"
	opID := op.OperationID
	for op.Status == statusAssigning || op.Status == statusUnassigned {
		if err := r.wait(ctx, rsp.retryAfter); err != nil {
			return nil, fmt.Errorf("operation %s still %s: %w", opID, op.Status, err)
		}
		if rsp, err = r.send(ctx, http.MethodGet, r.url("operations/"+url.PathEscape(opID)), nil); err != nil {
			return nil, err
		}
		if op, err = r.operation(rsp); err != nil {
			return nil, err
		}
		r.timing.Polls++
		r.Log.Info().Stringer("elapsed", r.elapsed()).Int("poll", r.timing.Polls).Str("status", op.Status).Msg("poll")
	}
	rs := op.RegistrationState
	if op.Status != statusAssigned {
		e := &Error{Status: op.Status, TrackingID: op.OperationID}
		if rs != nil {
			e.Code, e.Message = int(rs.ErrorCode), clean(rs.ErrorMessage)
		}
		if op.Status == statusDisabled {
			e.Hint = "the enrollment or the device is disabled in DPS"
		}
		return nil, e
	}

	r.step = "key import"
	hubKey, _ := base64.StdEncoding.DecodeString(rs.TPM.AuthenticationKey) // checked by parseOperation
	t := time.Now()
	err = r.dev.ImportKey(ctx, hubKey)
	r.timing.TPM += time.Since(t)
	if err != nil {
		return nil, fmt.Errorf("import the IoT hub device key: %w", err)
	}
	at := parseTime(rs.LastUpdated)
	if at.IsZero() {
		at = time.Now().UTC()
	}
	r.Log.Info().Stringer("elapsed", r.elapsed()).Str("hub", rs.AssignedHub).Str("device", rs.DeviceID).Str("substatus", rs.Substatus).Msg("assigned")
	return &Result{
		RegistrationID: r.req.RegistrationID,
		AssignedHub:    rs.AssignedHub,
		DeviceID:       rs.DeviceID,
		Status:         op.Status,
		Substatus:      rs.Substatus,
		OperationID:    opID,
		Payload:        rs.Payload,
		AssignedAt:     at,
		Timing:         r.timing,
	}, nil
}

func (r *registration) elapsed() time.Duration { return time.Since(r.start).Round(time.Millisecond) }

// operation interprets the answer to the signed PUT or a poll.
func (r *registration) operation(rsp *response) (*operation, error) {
	switch rsp.status {
	case http.StatusOK, http.StatusAccepted:
		return parseOperation(rsp.body)
	case http.StatusUnauthorized:
		e := parseError(rsp.status, rsp.requestID, rsp.body)
		e.Hint = "DPS did not accept the TPM-signed token; check the clock (tokens are checked within 5 minutes)"
		return nil, e
	default:
		return nil, parseError(rsp.status, rsp.requestID, rsp.body)
	}
}

func (r *registration) url(tail string) string {
	base := strings.TrimSuffix(orDefault(r.Endpoint, GlobalEndpoint), "/")
	return fmt.Sprintf("%s/%s/registrations/%s/%s?api-version=%s", base,
		url.PathEscape(r.IDScope), url.PathEscape(r.req.RegistrationID), tail, url.QueryEscape(orDefault(r.APIVersion, APIVersion)))
}

// wait sleeps before the next poll: retry-after when DPS sent one within
// 1 s to 5 min, else the poll interval, with jitter either way.
func (r *registration) wait(ctx context.Context, retryAfter time.Duration) error {
	d := retryAfter
	if d <= 0 {
		d = orDefault(r.PollInterval, DefaultPollInterval)
	}
	d = backoff.Jitter(d)
	t := time.Now()
	defer func() { r.timing.Wait += time.Since(t) }()
	return backoff.Sleep(ctx, d)
}

// httpsOnly returns a copy of hc that refuses to follow a redirect to
// anything but https, whatever client the caller gave: the token would
// follow it in clear.
func httpsOnly(hc *http.Client) *http.Client {
	c := *hc
	next := hc.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !strings.EqualFold(req.URL.Scheme, "https") {
			return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), ErrInsecureEndpoint)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}

type response struct {
	status     int
	body       []byte
	requestID  string
	retryAfter time.Duration
}

// send sends one request, again and again while the failure is transient
// (network errors, 429, 5xx), and returns any other answer.
func (r *registration) send(ctx context.Context, method, u string, body []byte) (*response, error) {
	var b backoff.Backoff
	for {
		rsp, err := r.roundTrip(ctx, method, u, body)
		var wait time.Duration
		switch {
		case err == nil && (rsp.status < 400 || rsp.status == http.StatusUnauthorized):
			return rsp, nil
		case err == nil:
			e := parseError(rsp.status, rsp.requestID, rsp.body)
			if !e.transient() {
				return nil, e
			}
			err, wait = e, rsp.retryAfter
		case ctx.Err() != nil, errors.Is(err, ErrInsecureEndpoint):
			return nil, err
		}
		if wait <= 0 {
			wait = b.Next()
		}
		r.Log.Warn().Err(err).Dur("retry_in", wait).Msg("retrying")
		t := time.Now()
		serr := backoff.Sleep(ctx, wait)
		r.timing.Wait += time.Since(t)
		if serr != nil {
			return nil, fmt.Errorf("%w; last failure: %w", serr, err)
		}
	}
}

func (r *registration) roundTrip(ctx context.Context, method, u string, body []byte) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if err := CheckEndpoint(u); err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	req.Header.Set("User-Agent", "edge-provisioner")
	if r.token != "" {
		req.Header.Set("Authorization", r.token)
	}
	t := time.Now()
	defer func() { r.timing.HTTP += time.Since(t) }()
	r.timing.Requests++
	hc := r.HTTP
	if hc == nil {
		hc = NewHTTPClient(nil)
	}
	rsp, err := httpsOnly(hc).Do(req)
	if err != nil {
		return nil, err
	}
	defer rsp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(rsp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read DPS answer: %w", err)
	}
	if len(data) > maxBody {
		return nil, fmt.Errorf("%w: answer larger than %d bytes", ErrResponse, maxBody)
	}
	return &response{
		status:     rsp.StatusCode,
		body:       data,
		requestID:  rsp.Header.Get("x-ms-request-id"),
		retryAfter: retryAfter(rsp.Header.Get("retry-after")),
	}, nil
}

// retryAfter reads the retry-after header (integer seconds); zero when
// absent or outside 1 s to 5 min, like the C SDK (docs/dps-protocol.md#registering-and-polling).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || time.Duration(n)*time.Second > maxRetryAfter {
		return 0
	}
	return time.Duration(n) * time.Second
}

type signerFunc func(ctx context.Context, data []byte) ([]byte, error)

func (f signerFunc) Sign(ctx context.Context, data []byte) ([]byte, error) { return f(ctx, data) }
