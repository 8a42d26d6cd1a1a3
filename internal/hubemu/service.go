package hubemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ServiceHandler serves a service API shaped like IoT Hub's REST API
// (api-version required on every request):
//
//	GET   /twins/{d}/modules/{m}          module twin
//	PATCH /twins/{d}/modules/{m}          {"properties":{"desired":{...}}} → twin
//	POST  /twins/{d}/modules/{m}/methods  {"methodName","payload","responseTimeoutInSeconds"} → {"status","payload"}
//	GET, PATCH /twins/{d}, POST /twins/{d}/methods  the same for devices
//	GET   /messages/upstream              (emulator only) messages routed to $upstream
//
// Twins are {"deviceId","moduleId","properties":{"desired":{...,"$version":N},"reported":{...,"$version":M}}}.
// Errors are {"Message":...}: 400 bad request, 404 unknown identity or
// module not connected, 504 method timeout.
//
// Requests are not authenticated yet: IoT Hub requires a service SAS token
// (skn = policy name) in Authorization, which a later change adds.
func (s *Server) ServiceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /twins/{d}/modules/{m}", s.serveGetTwin)
	mux.HandleFunc("PATCH /twins/{d}/modules/{m}", s.servePatchTwin)
	mux.HandleFunc("POST /twins/{d}/modules/{m}/methods", s.serveMethod)
	mux.HandleFunc("GET /twins/{d}", s.serveGetTwin)
	mux.HandleFunc("PATCH /twins/{d}", s.servePatchTwin)
	mux.HandleFunc("POST /twins/{d}/methods", s.serveMethod)
	mux.HandleFunc("GET /messages/upstream", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Upstream())
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			writeError(w, http.StatusBadRequest, "ErrorCode:InvalidProtocolVersion;api-version query parameter is required")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// serviceTwin is a twin in the service API's shape.
type serviceTwin struct {
	DeviceID   string `json:"deviceId"`
	ModuleID   string `json:"moduleId,omitempty"`
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
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveGetTwin(w http.ResponseWriter, r *http.Request) {
	s.writeTwin(w, r.PathValue("d"), r.PathValue("m"))
}

func (s *Server) servePatchTwin(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Properties struct {
			Desired json.RawMessage `json:"desired"`
		} `json:"properties"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;body is not JSON: "+err.Error())
		return
	}
	d, m := r.PathValue("d"), r.PathValue("m")
	if len(body.Properties.Desired) > 0 {
		if _, err := s.UpdateDesired(d, m, body.Properties.Desired); err != nil {
			writeServiceError(w, err)
			return
		}
	}
	s.writeTwin(w, d, m)
}

func (s *Server) serveMethod(w http.ResponseWriter, r *http.Request) {
	var body struct {
		MethodName string          `json:"methodName"`
		Payload    json.RawMessage `json:"payload"`
		Timeout    int             `json:"responseTimeoutInSeconds"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;body is not JSON: "+err.Error())
		return
	}
	if body.Timeout < 0 || body.Timeout > 300 {
		writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;responseTimeoutInSeconds must be within 0..300")
		return
	}
	timeout := 30 * time.Second // IoT Hub's default
	if body.Timeout > 0 {
		timeout = time.Duration(body.Timeout) * time.Second
	}
	d, m := r.PathValue("d"), r.PathValue("m")
	if _, ok := s.key(d, m); !ok {
		writeServiceError(w, fmt.Errorf("%s: %w", identity{d, m}, ErrUnknownIdentity))
		return
	}
	status, resp, err := s.InvokeMethod(r.Context(), d, m, body.MethodName, body.Payload, timeout)
	if err != nil {
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
	case errors.Is(err, ErrNotConnected):
		writeError(w, http.StatusNotFound, "ErrorCode:DeviceNotOnline;"+err.Error())
	case errors.Is(err, ErrMethodTimeout):
		writeError(w, http.StatusGatewayTimeout, "ErrorCode:GatewayTimeout;"+err.Error())
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
