package workloademu

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
)

type routeKind int

const (
	routeSign routeKind = iota + 1
	routeServerCert
	routeIdentityCert
	routeTrustBundle
	routeManifestTrustBundle
)

// moduleRoute reports whether the route names a module and so needs the
// caller's pid; the trust bundle routes do not (docs/edge-protocol.md#workload-api).
func (k routeKind) moduleRoute() bool {
	return k == routeSign || k == routeServerCert || k == routeIdentityCert
}

type route struct {
	kind   routeKind
	module string // percent-decoded
	genID  string // decoded for the certificate route only, as there
	pid    int32
}

// matchRoute matches the raw path like the routes' from_uri regexes, e.g.
// ^/modules/(?P<moduleId>[^/]+)/genid/(?P<genId>[^/]+)/sign$: every
// segment non-empty, {moduleId} percent-decoded to valid UTF-8
// (module/data/sign.rs, module/cert/server.rs).
func matchRoute(path string) (route, bool) {
	switch path {
	case "/trust-bundle":
		return route{kind: routeTrustBundle}, true
	case "/manifest-trust-bundle":
		return route{kind: routeManifestTrustBundle}, true
	}
	seg := strings.Split(path, "/")
	for _, s := range seg[1:] {
		if s == "" {
			return route{}, false
		}
	}
	var rt route
	switch {
	case len(seg) == 6 && seg[0] == "" && seg[1] == "modules" && seg[3] == "genid" && seg[5] == "sign":
		// {generationId} is required but not used, nor decoded.
		rt = route{kind: routeSign, genID: seg[4]}
	case len(seg) == 7 && seg[0] == "" && seg[1] == "modules" && seg[3] == "genid" && seg[5] == "certificate" && seg[6] == "server":
		g, ok := pathSegment(seg[4])
		if !ok {
			return route{}, false
		}
		rt = route{kind: routeServerCert, genID: g}
	case len(seg) == 5 && seg[0] == "" && seg[1] == "modules" && seg[3] == "certificate" && seg[4] == "identity":
		rt = route{kind: routeIdentityCert}
	default:
		return route{}, false
	}
	m, ok := pathSegment(seg[2])
	if !ok {
		return route{}, false
	}
	rt.module = m
	return rt, true
}

// authCaller is edgelet-http's auth_caller: the caller's pid must belong
// to the module in the path (docs/edge-protocol.md#workload-api).
func (s *Server) authCaller(w http.ResponseWriter, r *http.Request, rt route) bool {
	if s.pids == nil {
		return true
	}
	if m, ok := s.pids(rt.pid); ok && m == rt.module {
		return true
	}
	s.log.Info().Str("module", rt.module).Int32("pid", rt.pid).Msg("caller not authorized for module")
	s.fail(w, r, http.StatusForbidden, "forbidden")
	return false
}

type signResponse struct {
	Digest string `json:"digest"`
}

// sign is POST /modules/{m}/genid/{g}/sign (docs/edge-protocol.md#workload-api): only
// data is read; keyId and algo are ignored as by aziot-edged. The checks
// run in the real order: pid, body present, base64, identity.
func (s *Server) sign(w http.ResponseWriter, r *http.Request, rt route, body map[string]string) {
	s.signs.Add(1)
	if !s.authCaller(w, r, rt) {
		return
	}
	if body == nil {
		s.fail(w, r, http.StatusBadRequest, "missing parameter: request body")
		return
	}
	data, err := base64.StdEncoding.DecodeString(body["data"])
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "invalid parameter: data")
		return
	}
	key, ok := s.key(rt.module)
	if !ok {
		// An unknown module is an identity service failure, 500, not a
		// 404: the route matched (docs/edge-protocol.md#workload-api, get_module_key in
		// module/data/sign.rs).
		s.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("failed to get module identity for %s: identity not found", rt.module))
		return
	}
	m := hmac.New(sha256.New, key)
	m.Write(data)
	s.writeJSON(w, r, http.StatusOK, signResponse{Digest: base64.StdEncoding.EncodeToString(m.Sum(nil))})
}

type trustBundleResponse struct {
	Certificate string `json:"certificate"`
}

// trustBundle serves both bundles as PEM text, not base64 of it
// (docs/edge-protocol.md#workload-api).
func (s *Server) trustBundle(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.kind == routeManifestTrustBundle {
		s.writeJSON(w, r, http.StatusOK, trustBundleResponse{Certificate: string(s.manifest)})
		return
	}
	if len(s.trust) == 0 {
		s.fail(w, r, http.StatusNotFound, `certificate "aziot-edged-trust-bundle" not found`)
		return
	}
	s.writeJSON(w, r, http.StatusOK, trustBundleResponse{Certificate: string(s.trust)})
}

type privateKey struct {
	Type  string `json:"type"`
	Bytes string `json:"bytes"`
}

type certificateResponse struct {
	PrivateKey  privateKey `json:"privateKey"`
	Certificate string     `json:"certificate"`
	Expiration  string     `json:"expiration"`
}

// serverCert is POST /modules/{m}/genid/{g}/certificate/server
// (docs/edge-protocol.md#workload-api): CN and first SAN commonName, second SAN the
// module id without '$', EKU serverAuth, 201 with key, chain and
// expiration. expiration in the body is ignored.
func (s *Server) serverCert(w http.ResponseWriter, r *http.Request, rt route, body map[string]string) {
	if !s.authCaller(w, r, rt) {
		return
	}
	if body == nil {
		s.fail(w, r, http.StatusBadRequest, "missing parameter: request body")
		return
	}
	certID := fmt.Sprintf("aziot-edged/module/%s:%s:server", rt.module, rt.genID)
	cn := body["commonName"]
	if cn == "" {
		// openssl refuses an empty CN and DNS name: "failed to generate
		// csr" in cert/mod.rs (INFERRED).
		s.fail(w, r, http.StatusInternalServerError, "failed to generate csr")
		return
	}
	if s.ca == nil {
		s.fail(w, r, http.StatusInternalServerError, "failed to create cert "+certID)
		return
	}
	hosts := []string{cn}
	if m := strings.ReplaceAll(rt.module, "$", ""); m != "" && m != cn {
		hosts = append(hosts, m)
	}
	// pki issues ECDSA P-256 keys; aziot-edged's are RSA-2048. Both come
	// as PKCS#8 "PRIVATE KEY" PEM, which is what clients parse.
	cfg, err := s.ca.ServerTLS(hosts...)
	if err != nil {
		s.log.Warn().Err(err).Str("module", rt.module).Msg("issue server certificate")
		s.fail(w, r, http.StatusInternalServerError, "failed to create cert "+certID)
		return
	}
	tc := cfg.Certificates[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(tc.PrivateKey)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "failed to create cert "+certID)
		return
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "failed to parse cert")
		return
	}
	var chain []byte
	for _, der := range tc.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	s.writeJSON(w, r, http.StatusCreated, certificateResponse{
		PrivateKey:  privateKey{Type: "key", Bytes: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))},
		Certificate: string(chain),
		// chrono's to_rfc3339 on a UTC time: +00:00, not Z.
		Expiration: leaf.NotAfter.UTC().Format("2006-01-02T15:04:05+00:00"),
	})
}

// identityCert is POST /modules/{m}/certificate/identity (docs/edge-protocol.md#workload-api). It needs
// a client certificate with a URI SAN, which internal/emulator/pki cannot issue, so
// after the same checks as the real route it fails the way a certd
// failure does.
func (s *Server) identityCert(w http.ResponseWriter, r *http.Request, rt route) {
	if !s.authCaller(w, r, rt) {
		return
	}
	s.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("failed to create cert aziot-edged/module/%s:identity: not supported by the emulator", rt.module))
}
