package workloademu

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

// DefaultMaxConcurrent is aziot-edged's limit of simultaneous connections
// per workload socket (docs/edge-protocol.md#workload-api, workload_manager.rs
// max_requests).
const DefaultMaxConcurrent = 10

// bodyTimeout is how long http-common waits for a request body before it
// answers 408 (HYPER_REQUEST_TIMEOUT, docs/edge-protocol.md#workload-api).
const bodyTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Key returns a module's identity key, the HMAC key of its sign calls;
	// the lab wires it to the device registry. Required.
	Key func(moduleID string) (key []byte, ok bool)
	// CA issues module server certificates (docs/edge-protocol.md#workload-api); nil answers that route
	// with 500, as aziot-edged does when certd fails.
	CA *pki.CA
	// TrustBundle is the PEM returned by GET /trust-bundle; empty means
	// the CA's certificate, and with no CA either the route answers 404
	// like aziot-edged without its bundle (docs/edge-protocol.md#workload-api).
	TrustBundle []byte
	// ManifestTrustBundle is the PEM returned by GET
	// /manifest-trust-bundle; empty gives "", as when not configured.
	ManifestTrustBundle []byte
	// MaxConcurrent caps live connections per socket; zero means
	// DefaultMaxConcurrent. Connections beyond it are closed without an
	// HTTP reply.
	MaxConcurrent int
	// ModuleOfPID, when not nil, maps a caller's peer pid (SO_PEERCRED) to
	// the module it belongs to; a caller of another module's route gets
	// 403 {"message":"forbidden"}, and a module route reached without a
	// pid (Handler called directly) 404, as in aziot-edged. nil checks
	// nothing.
	ModuleOfPID func(pid int32) (moduleID string, ok bool)
	// Log receives one line per request and per socket; the zero value
	// logs nothing. Keys and digests are never logged.
	Log zerolog.Logger
}

// Server is the emulator. It is safe for concurrent use.
type Server struct {
	key      func(string) ([]byte, bool)
	ca       *pki.CA
	trust    []byte
	manifest []byte
	max      int
	pids     func(int32) (string, bool)
	log      zerolog.Logger
	signs    atomic.Int64
	// bodyTimeout is http-common's HYPER_REQUEST_TIMEOUT; tests shorten it.
	bodyTimeout time.Duration
}

// New returns an emulator configured by cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Key == nil {
		return nil, errors.New("workload emulator: Config.Key is required")
	}
	if cfg.MaxConcurrent < 0 {
		return nil, fmt.Errorf("workload emulator: MaxConcurrent %d is negative", cfg.MaxConcurrent)
	}
	s := &Server{
		key:      cfg.Key,
		ca:       cfg.CA,
		trust:    bytes.Clone(cfg.TrustBundle),
		manifest: bytes.Clone(cfg.ManifestTrustBundle),
		max:      cfg.MaxConcurrent,
		pids:     cfg.ModuleOfPID,
		log:      cfg.Log,

		bodyTimeout: bodyTimeout,
	}
	if s.max == 0 {
		s.max = DefaultMaxConcurrent
	}
	if len(s.trust) == 0 && s.ca != nil {
		s.trust = s.ca.CertPEM()
	}
	for name, b := range map[string][]byte{"trust bundle": s.trust, "manifest trust bundle": s.manifest} {
		if len(b) > 0 && !holdsCertificate(b) {
			return nil, fmt.Errorf("workload emulator: %s holds no PEM certificate", name)
		}
	}
	return s, nil
}

// holdsCertificate reports whether every PEM block of b is a certificate
// that parses, and there is at least one.
func holdsCertificate(b []byte) bool {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return n > 0 && len(bytes.TrimSpace(b)) == 0
		}
		if blk.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return false
		}
		n++
	}
}

// Handler returns the workload API without a socket: no connection cap,
// and no peer pid, so with Config.ModuleOfPID set the module routes answer
// 404. For unit tests.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Requests returns how many requests reached the sign route, whatever
// their outcome.
func (s *Server) Requests() int64 { return s.signs.Load() }

// errorBody is http-common's ErrorBody (docs/edge-protocol.md#workload-api).
type errorBody struct {
	Message string `json:"message"`
}

// writeJSON answers like http-common's response::json: the status,
// Content-Type application/json and the body as serde writes it (no HTML
// escaping, no trailing newline).
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only our own response types get here; they always encode.
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	s.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Msg("request")
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.writeJSON(w, r, status, errorBody{Message: msg})
}

// rawTarget returns the request path as sent (still percent-encoded, as
// hyper's uri.path() is) and the raw query.
func rawTarget(r *http.Request) (path, query string) {
	if strings.HasPrefix(r.RequestURI, "/") {
		path, query, _ = strings.Cut(r.RequestURI, "?")
		return path, query
	}
	return r.URL.EscapedPath(), r.URL.RawQuery
}

// serveHTTP follows http-common's make_service! step by step
// (docs/edge-protocol.md): api-version before anything else, then the
// route, then the method, then the body, then the route's own checks.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path, query := rawTarget(r)
	v, ok := queryParam(query, "api-version")
	if !ok {
		s.fail(w, r, http.StatusBadRequest, "api-version not specified")
		return
	}
	if !apiVersions[v] {
		s.fail(w, r, http.StatusBadRequest, "invalid api-version "+debugQuote(v))
		return
	}
	rt, ok := matchRoute(path)
	if ok && rt.kind.moduleRoute() && s.pids != nil {
		// Module routes need the caller's pid; without one from_uri
		// returns None and no route matches (module/data/sign.rs).
		rt.pid, ok = pidFrom(r.Context())
	}
	if !ok {
		s.fail(w, r, http.StatusNotFound, "not found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		if rt.kind != routeTrustBundle && rt.kind != routeManifestTrustBundle {
			s.fail(w, r, http.StatusBadRequest, "method not allowed")
			return
		}
		s.trustBundle(w, r, rt)
	case http.MethodPost:
		body, ok := s.body(w, r)
		if !ok {
			return
		}
		var fields map[string]string
		var err error
		if body != nil {
			switch rt.kind {
			case routeSign:
				fields, err = decodeStruct(body, "SignRequest", "data")
			case routeServerCert:
				fields, err = decodeStruct(body, "ServerCertificateRequest", "commonName")
			default:
				err = validJSON(body)
			}
		}
		if err != nil {
			s.fail(w, r, http.StatusUnprocessableEntity, err.Error())
			return
		}
		switch rt.kind {
		case routeSign:
			s.sign(w, r, rt, fields)
		case routeServerCert:
			s.serverCert(w, r, rt, fields)
		case routeIdentityCert:
			s.identityCert(w, r, rt)
		default:
			s.fail(w, r, http.StatusBadRequest, "method not allowed")
		}
	case http.MethodDelete:
		// No route implements DELETE, but http-common reads and checks the
		// body before it says so.
		body, ok := s.body(w, r)
		if !ok {
			return
		}
		if body != nil {
			if err := validJSON(body); err != nil {
				s.fail(w, r, http.StatusUnprocessableEntity, err.Error())
				return
			}
		}
		s.fail(w, r, http.StatusBadRequest, "method not allowed")
	case http.MethodPut:
		// PUT insists on a JSON body, even an empty one, before "method
		// not allowed".
		if !isJSON(r.Header.Values("Content-Type")) {
			s.fail(w, r, http.StatusUnsupportedMediaType, "request body must be application/json")
			return
		}
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		if len(body) == 0 {
			s.fail(w, r, http.StatusUnprocessableEntity, "EOF while parsing a value")
			return
		}
		if err := validJSON(body); err != nil {
			s.fail(w, r, http.StatusUnprocessableEntity, err.Error())
			return
		}
		s.fail(w, r, http.StatusBadRequest, "method not allowed")
	default:
		s.fail(w, r, http.StatusBadRequest, "method not allowed")
	}
}

// body returns the request body as POST and DELETE see it: nil when empty
// or when the Content-Type is not JSON (docs/edge-protocol.md#workload-api). ok is false
// when an error answer was written.
func (s *Server) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, ok := s.readBody(w, r)
	if !ok || len(b) == 0 || !isJSON(r.Header.Values("Content-Type")) {
		return nil, ok
	}
	return b, true
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	// Fails with a ResponseRecorder, which has no deadline to set. The
	// deadline is lifted again so that it cannot cut the connection while
	// the handler works.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.bodyTimeout))
	b, err := readBody(r.Body)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		// The rest of the body may never come: close rather than let
		// net/http wait for it to reuse the connection.
		w.Header().Set("Connection", "close")
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// tokio's Elapsed error text.
		s.fail(w, r, http.StatusRequestTimeout, "deadline has elapsed")
		return nil, false
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return b, true
}
