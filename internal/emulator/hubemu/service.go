package hubemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// ServiceHandler serves a service API shaped like IoT Hub's REST API
// (api-version required on every request; docs/edge-protocol.md#iot-hub-service-api):
//
//	GET   /twins/{d}/modules/{m}          module twin
//	PATCH /twins/{d}/modules/{m}          {"properties":{"desired":{...}}} → twin
//	POST  /twins/{d}/modules/{m}/methods  {"methodName","payload","responseTimeoutInSeconds","connectTimeoutInSeconds"} → {"status","payload"}
//	GET   /twins/{d}, POST /twins/{d}/methods  the same for devices
//	PATCH /twins/{d}                      {"tags":{...},"properties":{"desired":{...}}} → twin
//	PUT   /configurations/{id}            create (201) or, with If-Match, update (200)
//	GET   /configurations/{id}, GET /configurations?top=N
//	DELETE /configurations/{id}           204, If-Match optional
//	POST  /devices/{d}/applyConfigurationContent  {"modulesContent":{...}} → 204
//	PUT   /devices/{d}/modules/{m}        module identity: create (no If-Match) or update (If-Match) → 200
//	GET   /devices/{d}/modules/{m}, GET /devices/{d}/modules
//	DELETE /devices/{d}/modules/{m}       204, If-Match optional
//	GET   /messages/upstream?from=N&wait=D  (emulator only) messages routed to $upstream (upstream.go)
//
// Twins are {"deviceId","moduleId","etag","version","properties":{"desired":{...,"$version":N},"reported":{...,"$version":M}}},
// device twins with "tags" too. Module identities are {"moduleId",
// "deviceId","managedBy","generationId","etag","connectionState",...,
// "authentication":{"symmetricKey":{"primaryKey","secondaryKey"},"type":"sas"}}
// (registry.go). A twin PATCH takes If-Match too (twinetag.go). If-Match
// is "*" or the ETag in double quotes, as IoT Hub wants it (the JSON
// "etag" has none; the ETag header has them). Errors
// are {"Message":"ErrorCode:<code>;..."}: 400 bad request, 401
// unauthorized (with Config.ServicePolicies), 404 unknown device or
// identity, configuration, module identity, 409 module identity exists,
// 412 ETag mismatch. A direct method answers as IoT Hub does
// (methodstatus.go): 404 DeviceNotOnline (404103) when the module is not
// connected within connectTimeoutInSeconds, 504 GatewayTimeout (504101)
// when it does not answer in time.
//
// With Config.ServicePolicies, requests need a service SAS token; the
// module identity routes of a device also take a token of that device
// (audience {hub}/devices/{d}, no skn), as aziot-identityd sends.
func (s *Server) ServiceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /twins/{d}/modules/{m}", s.serveGetTwin)
	mux.HandleFunc("PATCH /twins/{d}/modules/{m}", s.servePatchTwin)
	mux.HandleFunc("POST /twins/{d}/modules/{m}/methods", s.serveMethod)
	mux.HandleFunc("GET /twins/{d}", s.serveGetTwin)
	mux.HandleFunc("PATCH /twins/{d}", s.servePatchTwin)
	mux.HandleFunc("POST /twins/{d}/methods", s.serveMethod)
	mux.HandleFunc("PUT /configurations/{id}", s.servePutConfiguration)
	mux.HandleFunc("GET /configurations/{id}", s.serveGetConfiguration)
	mux.HandleFunc("GET /configurations", s.serveListConfigurations)
	mux.HandleFunc("DELETE /configurations/{id}", s.serveDeleteConfiguration)
	mux.HandleFunc("POST /devices/{d}/applyConfigurationContent", s.serveApplyContent)
	mux.HandleFunc("PUT /devices/{d}/modules/{m}", s.servePutModule)
	mux.HandleFunc("GET /devices/{d}/modules/{m}", s.serveGetModule)
	mux.HandleFunc("GET /devices/{d}/modules", s.serveListModules)
	mux.HandleFunc("DELETE /devices/{d}/modules/{m}", s.serveDeleteModule)
	mux.HandleFunc("GET /messages/upstream", s.serveUpstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reason := s.authorizeService(r); reason != "" {
			s.log.Info().Str("method", r.Method).Str("path", r.URL.Path).Str("reason", reason).Msg("service request unauthorized")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"Message": "ErrorCode:IotHubUnauthorizedAccess;Unauthorized", "ExceptionMessage": reason})
			return
		}
		if r.URL.Query().Get("api-version") == "" {
			writeError(w, http.StatusBadRequest, "ErrorCode:InvalidProtocolVersion;api-version query parameter is required")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// authorizeService checks a request's service SAS token when
// Config.ServicePolicies is set (docs/edge-protocol.md#iot-hub-service-api): sr the hub host,
// skn a known policy, signed with its key, not expired past the 5 minute
// skew. A token without skn on a device's module registry is that device's
// (authorizeDevice). It returns why a request is refused, "" when it is
// not; the reason never quotes the token.
func (s *Server) authorizeService(r *http.Request) string {
	if len(s.policies) == 0 {
		return ""
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "no Authorization header"
	}
	tok, err := sas.Parse(h)
	if err != nil {
		return "malformed SAS token"
	}
	if d, ok := registryDevice(r); ok && tok.KeyName == "" {
		return s.authorizeDevice(tok, d)
	}
	key, ok := s.policies[tok.KeyName]
	if tok.KeyName == "" || !ok {
		return "unknown shared access policy"
	}
	if tok.MatchAudience(s.hub) != nil {
		return "token audience is not the hub"
	}
	return verifyReason(tok, key, s.now())
}

// verifyReason verifies tok with key at now and returns why it fails, ""
// when it does not.
func verifyReason(tok *sas.Token, key []byte, now time.Time) string {
	if err := tok.Verify(key, now); err != nil {
		if errors.Is(err, sas.ErrExpired) {
			return "token expired"
		}
		return "token signature does not match"
	}
	return ""
}

// serviceTwin is a twin in the service API's shape.
type serviceTwin struct {
	DeviceID   string `json:"deviceId"`
	ModuleID   string `json:"moduleId,omitempty"`
	Tags       any    `json:"tags,omitempty"` // device twins only
	ETag       string `json:"etag"`
	Version    int64  `json:"version"`
	Properties struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"properties"`
}

func (s *Server) writeTwin(w http.ResponseWriter, device, module string) {
	tw, err := s.Twin(device, module)
	if err != nil {
		writeServiceError(w, err)
		return
	}
	var out serviceTwin
	out.DeviceID, out.ModuleID = device, module
	out.ETag, out.Version = tw.ETag, tw.Version
	for _, p := range []struct {
		raw json.RawMessage
		v   int64
		dst *map[string]any
	}{{tw.Desired, tw.DesiredVersion, &out.Properties.Desired}, {tw.Reported, tw.ReportedVersion, &out.Properties.Reported}} {
		doc, _ := decodePatch(p.raw)
		if doc == nil {
			doc = map[string]any{}
		}
		*p.dst = withVersion(doc, p.v)
	}
	if module == "" {
		out.Tags = tw.Tags
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveGetTwin(w http.ResponseWriter, r *http.Request) {
	s.writeTwin(w, r.PathValue("d"), r.PathValue("m"))
}

func (s *Server) servePatchTwin(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Tags       json.RawMessage `json:"tags"`
		Properties struct {
			Desired json.RawMessage `json:"desired"`
		} `json:"properties"`
	}
	id := identity{r.PathValue("d"), r.PathValue("m")}
	err := readJSON(r, &body)
	var p twinPatch
	if err == nil {
		p.ifMatch, err = ifMatch(r)
	}
	if err == nil && len(body.Tags) > 0 {
		p.tags, err = decodePatch(body.Tags)
	}
	if err == nil && len(body.Properties.Desired) > 0 {
		p.desired, err = decodePatch(body.Properties.Desired)
	}
	if err == nil {
		_, err = s.patchTwin(id, p)
	}
	if err != nil {
		writeServiceError(w, fmt.Errorf("patch twin of %s: %w", id, err))
		return
	}
	s.writeTwin(w, id.device, id.module)
}

func (s *Server) serveMethod(w http.ResponseWriter, r *http.Request) {
	var body struct {
		MethodName string          `json:"methodName"`
		Payload    json.RawMessage `json:"payload"`
		Timeout    int             `json:"responseTimeoutInSeconds"`
		Connect    int             `json:"connectTimeoutInSeconds"`
	}
	if err := readJSON(r, &body); err != nil {
		writeServiceError(w, err)
		return
	}
	// IoT Hub takes a response timeout of 5..300 s (0: its default of
	// 30 s) and a connect timeout of 0..300 s (learn.microsoft.com
	// dotnet/api/microsoft.azure.devices.client.methodrequest.responsetimeout
	// and .connectiontimeout; iot-hub-devguide-direct-methods).
	if (body.Timeout != 0 && (body.Timeout < 5 || body.Timeout > 300)) || body.Connect < 0 || body.Connect > 300 {
		writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;responseTimeoutInSeconds must be within 5..300 and connectTimeoutInSeconds within 0..300")
		return
	}
	timeout := 30 * time.Second // IoT Hub's default
	if body.Timeout > 0 {
		timeout = time.Duration(body.Timeout) * time.Second
	}
	connect := time.Duration(body.Connect) * time.Second // IoT Hub's default: 0
	d, m := r.PathValue("d"), r.PathValue("m")
	// An identity without a key (a keyless $edgeAgent) exists all the
	// same: not connected, it is DeviceNotOnline.
	if !s.exists(identity{d, m}) {
		writeServiceError(w, fmt.Errorf("%s: %w", identity{d, m}, ErrUnknownIdentity))
		return
	}
	status, resp, err := s.InvokeMethod(r.Context(), d, m, body.MethodName, body.Payload, timeout)
	if errors.Is(err, ErrNotConnected) && connect > 0 && s.waitConnected(r.Context(), identity{d, m}, connect) {
		status, resp, err = s.InvokeMethod(r.Context(), d, m, body.MethodName, body.Payload, timeout)
	}
	switch {
	case errors.Is(err, ErrNotConnected):
		s.writeMethodError(w, codeDeviceNotOnline, connect)
		return
	case errors.Is(err, ErrMethodTimeout):
		s.writeMethodError(w, codeGatewayTimeout, connect)
		return
	case err != nil:
		writeServiceError(w, err)
		return
	}
	var payload any = json.RawMessage("null")
	switch {
	case len(resp) == 0:
	case json.Valid(resp):
		payload = resp
	default:
		payload = string(resp)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": status, "payload": payload})
}

func writeServiceError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnknownIdentity):
		writeError(w, http.StatusNotFound, "ErrorCode:DeviceNotFound;"+err.Error())
	case errors.Is(err, ErrPreconditionFailed):
		writeError(w, http.StatusPreconditionFailed, "ErrorCode:PreconditionFailed;"+err.Error())
	case errors.Is(err, ErrInvalidTwin), errors.Is(err, ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;"+err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "ErrorCode:ServerError;"+err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"Message": msg, "ExceptionMessage": ""})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
