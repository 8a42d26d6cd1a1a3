package hubemu

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// The module identity registry of IoT Hub's REST API, as aziot-identityd
// uses it to create the module identities of an IoT Edge device
// (Azure/iot-identity-service identity/aziot-cloud-client-async/src/hub/mod.rs:
// create_module is a PUT without If-Match, update_module and delete_module
// send If-Match "*", all signed with the device's own credentials).
//
// The registry knows only the modules created through it: Config.Key is a
// function and cannot be listed. A module it holds is authenticated with
// its primary key, whatever Config.Key says; a module deleted through it is
// unknown everywhere until it is created again.
//
// The devices of Config.Devices are IoT Edge devices, and IoT Hub creates
// the module identities $edgeAgent and $edgeHub with an IoT Edge device,
// without keys (authentication null in an export, azure-iot-sdk-csharp
// issue 1146; "the system modules $edgeHub and $edgeAgent are not
// automatically initialized, and lack the connection string",
// ridomin/aziotedge-modinit README): aziot-identityd gives them keys with
// an update. The registry makes them, keyless, the first time it is asked
// about such a device; a keyless module cannot connect.

// moduleIdentity is a module identity created through the registry API. It
// is not changed once stored: an update stores a new one.
type moduleIdentity struct {
	managedBy    string
	generationID string
	etag         string
	// primary and secondary are nil for a system module not given keys
	// yet: its authentication type is "none".
	primary, secondary []byte
}

// moduleView is a module identity as IoT Hub returns it (azure-iot-sdk-python
// azure-iot-hub/azure/iot/hub/protocol/models/module.py).
type moduleView struct {
	ModuleID                   string        `json:"moduleId"`
	ManagedBy                  string        `json:"managedBy,omitempty"`
	DeviceID                   string        `json:"deviceId"`
	GenerationID               string        `json:"generationId"`
	Etag                       string        `json:"etag"`
	ConnectionState            string        `json:"connectionState"`
	ConnectionStateUpdatedTime string        `json:"connectionStateUpdatedTime"`
	LastActivityTime           string        `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int           `json:"cloudToDeviceMessageCount"`
	Authentication             authMechanism `json:"authentication"`
}

// authMechanism is IoT Hub's AuthenticationMechanism; only sas is served.
type authMechanism struct {
	SymmetricKey struct {
		PrimaryKey   *string `json:"primaryKey"`
		SecondaryKey *string `json:"secondaryKey"`
	} `json:"symmetricKey"`
	X509Thumbprint struct {
		PrimaryThumbprint   *string `json:"primaryThumbprint"`
		SecondaryThumbprint *string `json:"secondaryThumbprint"`
	} `json:"x509Thumbprint"`
	Type string `json:"type"`
}

// moduleBody is what a PUT may set. The other fields of a module (etag,
// generationId, connection state) are the hub's and are ignored, as IoT
// Hub does ("The moduleId and generationId cannot be updated by the user",
// Modules - Create Or Update Identity).
type moduleBody struct {
	ModuleID       string         `json:"moduleId"`
	DeviceID       string         `json:"deviceId"`
	ManagedBy      string         `json:"managedBy"`
	Authentication *authMechanism `json:"authentication"`
}

// neverUTC is how IoT Hub shows a time that never happened (.NET's
// DateTime.MinValue); the emulator does not track connection times.
const neverUTC = "0001-01-01T00:00:00Z"

// Symmetric key lengths IoT Hub accepts (azure-iot-sdk-csharp
// iothub/service/src/SymmetricKey.cs, SecurityConstants.Min/MaxKeyLengthInBytes),
// and the length of the keys it generates.
const (
	minKeyLen       = 16
	maxKeyLen       = 64
	generatedKeyLen = 32
)

// identityKeys is Server.keys: the keys a token of the identity may be
// signed with. A module of the registry has its primary and secondary
// keys, which edgeHub both takes (DeviceScopeTokenAuthenticator: "the token
// did not match the primary or the secondary key"), none while it is a
// keyless system module; the registry takes precedence over Config.Key,
// and a module deleted through the registry is unknown even when
// Config.Key would give it a key.
func (s *Server) identityKeys(device, module string) ([][]byte, bool) {
	if module != "" {
		id := identity{device, module}
		if module == edgeAgent || module == edgeHub {
			s.systemModules(device)
		}
		s.regMu.Lock()
		m, removed := s.modules[id], s.removed[id]
		s.regMu.Unlock()
		if m != nil {
			if m.primary == nil {
				return nil, false
			}
			return [][]byte{m.primary, m.secondary}, true
		}
		if removed {
			return nil, false
		}
	}
	k, ok := s.cfgKey(device, module)
	if !ok {
		return nil, false
	}
	return [][]byte{k}, true
}

// systemModules makes the keyless $edgeAgent and $edgeHub identities of an
// IoT Edge device (one of Config.Devices) that the registry has not held
// yet, unless Config.Key gives it a key. It must not be called with
// s.regMu held.
func (s *Server) systemModules(device string) {
	if !s.isDevice(device) {
		return
	}
	var missing []string
	for _, module := range []string{edgeAgent, edgeHub} {
		if _, ok := s.cfgKey(device, module); !ok {
			missing = append(missing, module)
		}
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	for _, module := range missing {
		id := identity{device, module}
		if s.modules[id] != nil || s.removed[id] {
			continue
		}
		s.regSeq++
		s.modules[id] = &moduleIdentity{generationID: newGenerationID(), etag: etagOf(s.regSeq)}
	}
}

// exists reports whether id is an identity of the hub, keyed or not: one
// Config.Key or the module registry knows (a keyless $edgeAgent or
// $edgeHub of an edge device among them), or a device Config.Devices
// lists.
func (s *Server) exists(id identity) bool {
	if _, ok := s.keys(id.device, id.module); ok {
		return true
	}
	if id.module == "" {
		return s.isDevice(id.device)
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	return s.modules[id] != nil
}

// newGenerationID returns the generation of a module created anew: another
// generation tells a re-created module from the deleted one, and
// aziot-identityd derives module keys from moduleId:generationId.
func newGenerationID() string { return strconv.FormatUint(mrand.Uint64(), 10) }

// registryDevice returns the device of a module registry request,
// /devices/{d}/modules[/{m}], its path split and unescaped segment by
// segment as ServeMux does.
func registryDevice(r *http.Request) (string, bool) {
	segs := strings.Split(r.URL.EscapedPath(), "/")
	if len(segs) < 4 || len(segs) > 5 || segs[0] != "" || segs[1] != "devices" || segs[3] != "modules" || len(segs) == 5 && segs[4] == "" {
		return "", false
	}
	d, err := url.PathUnescape(segs[2])
	if err != nil || d == "" {
		return "", false
	}
	return d, true
}

// authorizeDevice checks a device token on device's own module registry:
// aziot-identityd signs those requests with the device's key for the
// audience {hub}/devices/{d} and no skn (aziot-cloud-client-async
// src/connector.rs, auth_header). The token is checked as a CONNECT's is:
// audience case-insensitive, expiry with sas.MaxClockSkew, HMAC with
// Config.Key(device, ""). It returns why the request is refused, "" when
// it is not.
func (s *Server) authorizeDevice(tok *sas.Token, device string) string {
	if tok.MatchAudience(sas.DeviceResource(s.hub, device)) != nil {
		return "token audience is not this device at the hub"
	}
	key, ok := s.cfgKey(device, "")
	if !ok {
		return "unknown device"
	}
	return verifyReason(tok, key, s.now())
}

// moduleKeys returns the keys of a PUT. Both keys are given, standard
// base64 of 16 to 64 bytes, or neither is, and the hub generates both
// (azure-iot-sdk-csharp iothub/service/src/SymmetricKey.cs IsValid: "either
// both keys should be specified or neither once should be specified (in
// which case we will create both the keys in the service)").
func moduleKeys(a *authMechanism) (primary, secondary []byte, err error) {
	var p, sec string
	if a != nil {
		// IoT Hub's types are sas, selfSigned, certificateAuthority and none
		// (Modules - Create Or Update Identity); a missing type is the SDKs'
		// default, sas (C# AuthenticationMechanism).
		if a.Type != "" && a.Type != "sas" {
			return nil, nil, fmt.Errorf("%w: authentication type %q is not supported by the emulator: only \"sas\"", ErrInvalidArgument, a.Type)
		}
		if a.SymmetricKey.PrimaryKey != nil {
			p = *a.SymmetricKey.PrimaryKey
		}
		if a.SymmetricKey.SecondaryKey != nil {
			sec = *a.SymmetricKey.SecondaryKey
		}
	}
	if strings.TrimSpace(p) == "" && strings.TrimSpace(sec) == "" {
		return randomKey(), randomKey(), nil
	}
	keys := make([][]byte, 2)
	for i, k := range []string{p, sec} {
		name := [2]string{"primaryKey", "secondaryKey"}[i]
		b, err := base64.StdEncoding.DecodeString(k)
		switch {
		case strings.TrimSpace(k) == "":
			return nil, nil, fmt.Errorf("%w: %s is empty: give both keys or neither", ErrInvalidArgument, name)
		case err != nil:
			return nil, nil, fmt.Errorf("%w: %s is not standard base64", ErrInvalidArgument, name)
		case len(b) < minKeyLen || len(b) > maxKeyLen:
			return nil, nil, fmt.Errorf("%w: %s is %d bytes, want %d to %d", ErrInvalidArgument, name, len(b), minKeyLen, maxKeyLen)
		}
		keys[i] = b
	}
	return keys[0], keys[1], nil
}

func randomKey() []byte {
	k := make([]byte, generatedKeyLen)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return k
}

// registryDeviceKnown refuses requests about a device Config.Key does not
// know (404 DeviceNotFound).
// It makes the device's system modules when it is an IoT Edge device.
func (s *Server) registryDeviceKnown(w http.ResponseWriter, device string) bool {
	if _, ok := s.cfgKey(device, ""); !ok {
		writeServiceError(w, fmt.Errorf("device %q: %w", device, ErrUnknownIdentity))
		return false
	}
	s.systemModules(device)
	return true
}

// viewModule returns a module as IoT Hub shows it, connected or not now.
// It must not be called with s.regMu held.
func (s *Server) viewModule(id identity, m *moduleIdentity) moduleView {
	v := moduleView{
		ModuleID:                   id.module,
		ManagedBy:                  m.managedBy,
		DeviceID:                   id.device,
		GenerationID:               m.generationID,
		Etag:                       m.etag,
		ConnectionState:            "Disconnected",
		ConnectionStateUpdatedTime: neverUTC,
		LastActivityTime:           neverUTC,
	}
	s.mu.Lock()
	if s.conns[id] != nil {
		v.ConnectionState = "Connected"
	}
	s.mu.Unlock()
	if m.primary == nil {
		// A system module not given keys yet [UNCONFIRMED: how IoT Hub's
		// GET shows it; its export shows authentication null].
		v.Authentication.Type = "none"
		return v
	}
	p, sec := base64.StdEncoding.EncodeToString(m.primary), base64.StdEncoding.EncodeToString(m.secondary)
	v.Authentication.Type = "sas"
	v.Authentication.SymmetricKey.PrimaryKey = &p
	v.Authentication.SymmetricKey.SecondaryKey = &sec
	return v
}

func (s *Server) writeModule(w http.ResponseWriter, id identity, m *moduleIdentity) {
	// The ETag header is quoted, the JSON etag is not, as for
	// configurations.
	w.Header().Set("ETag", `"`+m.etag+`"`)
	writeJSON(w, http.StatusOK, s.viewModule(id, m))
}

func moduleNotFound(w http.ResponseWriter, id identity) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("ErrorCode:ModuleNotFound;module %q of device %q does not exist", id.module, id.device))
}

// servePutModule creates a module identity (no If-Match) or updates one
// (If-Match its ETag or "*"), answering 200 with the module either way:
// aziot-identityd accepts only 200 (aziot-cloud-client-async hub/mod.rs,
// parse_expect_ok). A create of an existing module is 409
// ModuleAlreadyExistsOnDevice and an update of a missing one 404
// ModuleNotFound (azure-iot-sdk-csharp iothub/service/src/HttpRegistryManager.cs:
// AddModuleAsync maps 409 to ModuleAlreadyExistsException, UpdateModuleAsync
// 404 to ModuleNotFoundException, both 412 to PreconditionFailedException).
func (s *Server) servePutModule(w http.ResponseWriter, r *http.Request) {
	id := identity{r.PathValue("d"), r.PathValue("m")}
	if !s.registryDeviceKnown(w, id.device) {
		return
	}
	var body moduleBody
	err := readJSON(r, &body)
	if err == nil && (body.DeviceID != "" && body.DeviceID != id.device || body.ModuleID != "" && body.ModuleID != id.module) {
		err = fmt.Errorf("%w: the body names %s/%s, the URL %s", ErrInvalidArgument, body.DeviceID, body.ModuleID, id)
	}
	var match string
	if err == nil {
		match, err = ifMatch(r)
	}
	m := &moduleIdentity{managedBy: body.ManagedBy}
	if err == nil {
		m.primary, m.secondary, err = moduleKeys(body.Authentication)
	}
	if err != nil {
		writeServiceError(w, fmt.Errorf("module identity %s: %w", id, err))
		return
	}
	s.regMu.Lock()
	old := s.modules[id]
	switch {
	case old == nil && match != "":
		s.regMu.Unlock()
		moduleNotFound(w, id)
		return
	case old != nil && match == "":
		s.regMu.Unlock()
		writeError(w, http.StatusConflict, fmt.Sprintf("ErrorCode:ModuleAlreadyExistsOnDevice;device %q already has module %q; update it with If-Match", id.device, id.module))
		return
	case old != nil && match != "*" && match != old.etag:
		s.regMu.Unlock()
		writeError(w, http.StatusPreconditionFailed, fmt.Sprintf("ErrorCode:PreconditionFailed;module %q of device %q has another ETag", id.module, id.device))
		return
	case old == nil:
		m.generationID = newGenerationID()
	default:
		m.generationID = old.generationID
	}
	s.regSeq++
	m.etag = etagOf(s.regSeq)
	s.modules[id] = m
	delete(s.removed, id)
	s.regMu.Unlock()
	s.log.Info().Str("module", id.String()).Bool("created", old == nil).Msg("module identity stored")
	s.writeModule(w, id, m)
}

func (s *Server) serveGetModule(w http.ResponseWriter, r *http.Request) {
	id := identity{r.PathValue("d"), r.PathValue("m")}
	if !s.registryDeviceKnown(w, id.device) {
		return
	}
	s.regMu.Lock()
	m := s.modules[id]
	s.regMu.Unlock()
	if m == nil {
		moduleNotFound(w, id)
		return
	}
	s.writeModule(w, id, m)
}

// serveListModules lists the registry's modules of a device, by moduleId.
func (s *Server) serveListModules(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("d")
	if !s.registryDeviceKnown(w, d) {
		return
	}
	type entry struct {
		id identity
		m  *moduleIdentity
	}
	var found []entry
	s.regMu.Lock()
	for id, m := range s.modules {
		if id.device == d {
			found = append(found, entry{id, m})
		}
	}
	s.regMu.Unlock()
	slices.SortFunc(found, func(a, b entry) int { return strings.Compare(a.id.module, b.id.module) })
	out := []moduleView{}
	for _, e := range found {
		out = append(out, s.viewModule(e.id, e.m))
	}
	writeJSON(w, http.StatusOK, out)
}

// serveDeleteModule deletes a module identity: 204, If-Match optional
// (Modules - Delete Identity does not require it; the SDKs send "*").
// Connections of the module are closed at the next re-authentication.
func (s *Server) serveDeleteModule(w http.ResponseWriter, r *http.Request) {
	id := identity{r.PathValue("d"), r.PathValue("m")}
	if !s.registryDeviceKnown(w, id.device) {
		return
	}
	match, err := ifMatch(r)
	if err != nil {
		writeServiceError(w, fmt.Errorf("module identity %s: %w", id, err))
		return
	}
	s.regMu.Lock()
	m := s.modules[id]
	switch {
	case m == nil:
		s.regMu.Unlock()
		moduleNotFound(w, id)
		return
	case match != "" && match != "*" && match != m.etag:
		s.regMu.Unlock()
		writeError(w, http.StatusPreconditionFailed, fmt.Sprintf("ErrorCode:PreconditionFailed;module %q of device %q has another ETag", id.module, id.device))
		return
	}
	delete(s.modules, id)
	s.removed[id] = true
	s.regMu.Unlock()
	// The twin goes with the identity: one created again starts afresh.
	s.twinMu.Lock()
	delete(s.twins, id)
	s.twinMu.Unlock()
	s.log.Info().Str("module", id.String()).Msg("module identity deleted")
	w.WriteHeader(http.StatusNoContent)
}
