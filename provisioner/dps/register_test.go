package dps_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// lab is the DPS emulator as a device reaches it.
type lab struct{ *dpstest.Server }

func newLab(t testing.TB, cfg dpsemu.Config, wrap func(http.Handler) http.Handler) *lab {
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 1
	}
	return &lab{dpstest.Start(t, cfg, wrap)}
}

func (l *lab) client(log io.Writer) *dps.Client {
	c := &dps.Client{IDScope: l.IDScope(), Endpoint: l.URL, HTTP: l.HTTP, Timeout: 20 * time.Second}
	if log != nil {
		c.Log = zerolog.New(log)
	}
	return c
}

func (l *lab) enroll(t testing.TB, id *tpm.Identity, mutate func(*dpsservice.Enrollment)) {
	t.Helper()
	l.EnrollTPM(t, id.RegistrationID, id.EndorsementKey, mutate)
}

func openTPM(t testing.TB, uri string) (*tpm.TPM, *tpm.Identity) {
	t.Helper()
	tp, err := tpm.Open(uri, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tp, id
}

func request(id *tpm.Identity) dps.Request {
	return dps.Request{RegistrationID: id.RegistrationID, EndorsementKey: id.EndorsementKey, StorageRootKey: id.StorageRootKey}
}

// checkHubKey checks that the TPM signs hub tokens with the key the
// registry holds for the device, as the IoT Hub emulator will check them.
func checkHubKey(t testing.TB, l *lab, tp *tpm.TPM, res *dps.Result) {
	t.Helper()
	dev, ok := l.Registry().Get(res.AssignedHub, res.DeviceID)
	if !ok {
		t.Fatalf("registry has no device %s on %s", res.DeviceID, res.AssignedHub)
	}
	tok, err := sas.New(t.Context(), tp, sas.DeviceResource(res.AssignedHub, res.DeviceID), "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p, err := sas.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(dev.PrimaryKey, time.Now()); err != nil {
		t.Fatalf("hub token signed in the TPM does not verify with the registry's key: %v", err)
	}
}

func TestRegister(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		l := newLab(t, dpsemu.Config{AssignDelay: 500 * time.Millisecond}, nil)
		tp, id := openTPM(t, uri)
		payload := json.RawMessage(`{"site":"plant-7"}`)
		l.enroll(t, id, func(e *dpsservice.Enrollment) { e.DeviceID = "press-7" })
		var log bytes.Buffer
		req := request(id)
		req.Payload = payload
		res, err := l.client(&log).Register(t.Context(), tp, req)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != "assigned" || res.DeviceID != "press-7" || res.AssignedHub != dpsemu.DefaultHub || res.Substatus != "initialAssignment" || res.RegistrationID != id.RegistrationID {
			t.Errorf("Register = %+v", res)
		}
		if !strings.HasPrefix(res.OperationID, "4.") || res.AssignedAt.IsZero() {
			t.Errorf("operation %q at %v", res.OperationID, res.AssignedAt)
		}
		var echoed map[string]string
		if err := json.Unmarshal(res.Payload, &echoed); err != nil || echoed["site"] != "plant-7" {
			t.Errorf("payload echoed as %s", res.Payload)
		}
		// The assignment waits 0.5 s and retry-after is 1 s: one poll.
		if tm := res.Timing; tm.Requests != 3 || tm.Polls != 1 || tm.Wait < time.Second || tm.TPM <= 0 || tm.HTTP <= 0 {
			t.Errorf("timing = %+v, want 3 requests, 1 poll, ≥1 s waiting", tm)
		}
		for _, step := range []string{"challenge received", "key activated", "operation", "poll", "assigned"} {
			if !strings.Contains(log.String(), `"message":"`+step+`"`) {
				t.Errorf("no %q line in the log:\n%s", step, log.String())
			}
		}
		if strings.Contains(log.String(), "sig=") || strings.Contains(log.String(), "SharedAccessSignature") {
			t.Errorf("the log holds a token:\n%s", log.String())
		}
		checkHubKey(t, l, tp, res)
		e, err := l.Service.GetEnrollment(t.Context(), id.RegistrationID)
		if err != nil {
			t.Fatal(err)
		}
		if e.RegistrationState == nil || e.RegistrationState.Status != "assigned" {
			t.Errorf("enrollment's registration state = %+v, want assigned", e.RegistrationState)
		}

		// Registering again replaces the key, which keeps working.
		res2, err := l.client(nil).Register(t.Context(), tp, request(id))
		if err != nil {
			t.Fatal(err)
		}
		if res2.DeviceID != res.DeviceID || res2.AssignedHub != res.AssignedHub {
			t.Errorf("second registration = %+v, want the same device and hub", res2)
		}
		checkHubKey(t, l, tp, res2)
	})
}

// tamper rewrites the challenge blob DPS sends, one byte flipped.
func tamper(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var c map[string]any
		if rec.Code == http.StatusUnauthorized && json.Unmarshal(body, &c) == nil && c["authenticationKey"] != nil {
			blob, _ := base64.StdEncoding.DecodeString(c["authenticationKey"].(string))
			blob[40] ^= 1
			c["authenticationKey"] = base64.StdEncoding.EncodeToString(blob)
			body, _ = json.Marshal(c)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// forge replaces the signature of every token on the way to DPS.
func forge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" && strings.Contains(r.URL.Path, "/registrations/") {
			i := strings.Index(a, "sig=")
			j := strings.Index(a[i:], "&")
			r.Header.Set("Authorization", a[:i]+"sig="+sas.Escape(base64.StdEncoding.EncodeToString(make([]byte, 32)))+a[i+j:])
		}
		next.ServeHTTP(w, r)
	})
}

func TestRegisterFailuresKeepKey(t *testing.T) {
	tp, id := openTPM(t, tpmtest.StartSwtpm(t).URI)
	// Give the TPM a working hub key first.
	good := newLab(t, dpsemu.Config{}, nil)
	good.enroll(t, id, nil)
	res, err := good.client(nil).Register(t.Context(), tp, request(id))
	if err != nil {
		t.Fatal(err)
	}
	other, err := tpm.Open(tpmtest.StartSim(t), tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	otherID, err := other.Identity(t.Context())
	other.Close()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		cfg    dpsemu.Config
		wrap   func(http.Handler) http.Handler
		enroll func(*dpsservice.Enrollment) // nil: no enrollment
		client func(*dps.Client)
		faults dpsemu.Faults
		skew   time.Duration // DPS's clock ahead of the device's, once enrolled
		check  func(error) bool
		want   string
	}{
		{name: "no enrollment", check: code(401, 401002), want: "no enrollment for this registration ID"},
		{name: "wrong scope", enroll: keep, client: func(c *dps.Client) { c.IDScope = "0ne00000BAD" }, check: code(401, 401002), want: "check the scope"},
		{name: "EK mismatch", enroll: func(e *dpsservice.Enrollment) { e.Attestation.TPM.EndorsementKey = otherID.EndorsementKey }, check: code(400, 400004), want: "does not match the enrollment"},
		{name: "disabled", enroll: func(e *dpsservice.Enrollment) { e.ProvisioningStatus = "disabled" }, check: status("disabled"), want: "disabled"},
		{name: "tampered blob", enroll: keep, wrap: tamper, check: is(tpm.ErrActivation), want: "key activation"},
		{name: "forged SAS", enroll: keep, wrap: forge, check: code(401, 0), want: "did not accept the TPM-signed token"},
		{name: "expired SAS", enroll: keep, skew: 2 * time.Hour, check: code(401, 0), want: "check the clock"},
		{name: "429 storm", enroll: keep, faults: dpsemu.Faults{Throttle: 1000, ThrottleRetryAfter: 1}, client: timeout(2500 * time.Millisecond), check: is(dps.ErrTimeout), want: "429"},
		{name: "503 storm", enroll: keep, faults: dpsemu.Faults{ServerErrors: 1000}, client: timeout(2500 * time.Millisecond), check: is(dps.ErrTimeout), want: "503"},
		{name: "poll timeout", enroll: keep, cfg: dpsemu.Config{AssignDelay: time.Hour}, client: timeout(2500 * time.Millisecond), check: is(dps.ErrTimeout), want: "still assigning"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var skew atomic.Int64
			tc.cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			l := newLab(t, tc.cfg, tc.wrap)
			if tc.enroll != nil {
				l.enroll(t, id, tc.enroll)
			}
			skew.Store(int64(tc.skew))
			l.SetFaults(tc.faults)
			c := l.client(nil)
			if tc.client != nil {
				tc.client(c)
			}
			_, err := c.Register(t.Context(), tp, request(id))
			if err == nil || !tc.check(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Register = %v, want an error saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "sig=") {
				t.Errorf("error holds a token: %v", err)
			}
			// The hub key from the good registration still signs.
			checkHubKey(t, good, tp, res)
		})
	}
}

var keep = func(*dpsservice.Enrollment) {}

func timeout(d time.Duration) func(*dps.Client) { return func(c *dps.Client) { c.Timeout = d } }

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

func status(s string) func(error) bool {
	return func(err error) bool {
		var e *dps.Error
		return errors.As(err, &e) && e.Status == s
	}
}

func code(httpStatus, errorCode int) func(error) bool {
	return func(err error) bool {
		var e *dps.Error
		return errors.As(err, &e) && e.HTTPStatus == httpStatus && (errorCode == 0 || e.Code == errorCode)
	}
}

func TestRegisterRetries(t *testing.T) {
	tp, id := openTPM(t, tpmtest.StartSim(t))
	for name, f := range map[string]dpsemu.Faults{
		"throttled":          {Throttle: 2, ThrottleRetryAfter: 1},
		"server errors":      {ServerErrors: 2},
		"connections closed": {Resets: 2},
	} {
		t.Run(name, func(t *testing.T) {
			l := newLab(t, dpsemu.Config{}, nil)
			l.enroll(t, id, nil)
			l.SetFaults(f)
			var log bytes.Buffer
			res, err := l.client(&log).Register(t.Context(), tp, request(id))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(log.String(), `"message":"retrying"`); got != 2 {
				t.Errorf("%d retries logged, want 2:\n%s", got, log.String())
			}
			checkHubKey(t, l, tp, res)
		})
	}
}

func TestRegisterHonorsContext(t *testing.T) {
	tp, id := openTPM(t, tpmtest.StartSim(t))
	l := newLab(t, dpsemu.Config{AssignDelay: time.Hour}, nil)
	l.enroll(t, id, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := l.client(nil).Register(ctx, tp, request(id))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dps.ErrTimeout) {
		t.Errorf("Register = %v, want the caller's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Register returned %v after the context ended", d)
	}
}

// Two registrations on one TPM at once, over two connections, as two
// processes would do: swtpm serves one connection at a time, so the second
// either waits briefly for the first or is told within seconds that the
// TPM is held (tpm.ErrBusy), never interleaved with it; the slot ends up
// holding a working hub key.
func TestConcurrentRegistrations(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	first, err := tpm.Open(sw.URI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := first.Identity(t.Context())
	first.Close()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, dpsemu.Config{}, nil)
	l.enroll(t, id, nil)
	var wg sync.WaitGroup
	results := make([]*dps.Result, 2)
	errs := make([]error, 2)
	var mu sync.Mutex
	var last *dps.Result // of the registration that let go of the TPM last
	for i := range 2 {
		wg.Go(func() {
			tp, err := tpm.Open(sw.URI, tpm.Config{})
			if err != nil {
				errs[i] = err
				return
			}
			defer tp.Close()
			results[i], errs[i] = l.client(nil).Register(t.Context(), tp, request(id))
			if errs[i] == nil {
				mu.Lock()
				last = results[i]
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, tpm.ErrBusy) {
			t.Fatalf("registration %d: %v, want success or tpm.ErrBusy", i, err)
		}
	}
	if last == nil {
		t.Fatalf("no registration succeeded: %v", errs)
	}
	tr, err := tpm.OpenTransport(sw.URI)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.New(tr, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	checkHubKey(t, l, tp, last)
	tpmtest.CheckNoLeaks(t, tr)
}

// A plain http endpoint would carry the TPM-signed token in clear and let
// anyone on the path answer "assigned": the client refuses it before any
// request, and refuses a redirect from https to http.
func TestRegisterRefusesPlainHTTP(t *testing.T) {
	var requests atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(plain.Close)
	id := &tpm.Identity{RegistrationID: "r1", EndorsementKey: []byte{1}, StorageRootKey: []byte{2}}
	c := &dps.Client{IDScope: "0ne00000001", Endpoint: plain.URL, Timeout: 2 * time.Second}
	_, err := c.Register(t.Context(), nil, request(id))
	if !errors.Is(err, dps.ErrInsecureEndpoint) || !strings.Contains(err.Error(), "https") {
		t.Errorf("Register(%s) = %v, want ErrInsecureEndpoint", plain.URL, err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the plain endpoint got %d requests, want 0", n)
	}

	// An https endpoint that redirects to the plain one.
	redirect := newLab(t, dpsemu.Config{}, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		})
	})
	_, err = redirect.client(nil).Register(t.Context(), nil, request(id))
	if !errors.Is(err, dps.ErrInsecureEndpoint) {
		t.Errorf("Register through a redirect to http = %v, want ErrInsecureEndpoint", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the plain endpoint got %d requests after a redirect, want 0", n)
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		insecure bool // ErrInsecureEndpoint, else ok
		bad      bool // another error
	}{
		{endpoint: "https://global.azure-devices-provisioning.net"},
		{endpoint: "HTTPS://dps.local:8443/"},
		{endpoint: "http://global.azure-devices-provisioning.net", insecure: true},
		{endpoint: "HTTP://dps.local:8443/", insecure: true},
		{endpoint: "ftp://x", bad: true},
		{endpoint: "https://", bad: true},
		{endpoint: "global.azure-devices-provisioning.net", bad: true},
		{endpoint: "", bad: true},
	} {
		err := dps.CheckEndpoint(tc.endpoint)
		switch {
		case tc.insecure && !errors.Is(err, dps.ErrInsecureEndpoint):
			t.Errorf("CheckEndpoint(%q) = %v, want ErrInsecureEndpoint", tc.endpoint, err)
		case tc.bad && (err == nil || errors.Is(err, dps.ErrInsecureEndpoint)):
			t.Errorf("CheckEndpoint(%q) = %v, want a not-a-URL error", tc.endpoint, err)
		case !tc.insecure && !tc.bad && err != nil:
			t.Errorf("CheckEndpoint(%q) = %v, want nil", tc.endpoint, err)
		}
	}
	// A password in the URL never reaches the error.
	for _, endpoint := range []string{"http://op:hunter2@dps.local/", "ftp://op:hunter2@dps.local/"} {
		if err := dps.CheckEndpoint(endpoint); err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("CheckEndpoint(%q) = %v, want an error without the password", endpoint, err)
		}
	}
}
