package hubemu_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// module is a module identity as the registry API returns it.
type module struct {
	ModuleID        string `json:"moduleId"`
	DeviceID        string `json:"deviceId"`
	ManagedBy       string `json:"managedBy"`
	GenerationID    string `json:"generationId"`
	Etag            string `json:"etag"`
	ConnectionState string `json:"connectionState"`
	Authentication  struct {
		SymmetricKey struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		} `json:"symmetricKey"`
		Type string `json:"type"`
	} `json:"authentication"`
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// sasBody is a PUT body with sas keys, as the SDKs and aziot-identityd send
// it.
func sasBody(device, mod string, primary, secondary []byte) string {
	return `{"moduleId":"` + mod + `","deviceId":"` + device + `","authentication":{"symmetricKey":{"primaryKey":"` + b64(primary) + `","secondaryKey":"` + b64(secondary) + `"},"type":"sas"}}`
}

// moduleCall sends a registry request and decodes the module answered with
// 200, failing the test on any other status.
func moduleCall(t *testing.T, s *hubtest.Server, method, path, body string, headers map[string]string) module {
	t.Helper()
	code, b, h := request(t, s, method, path+api, body, headers)
	if code != 200 {
		t.Fatalf("%s %s = %d %s, want 200", method, path, code, b)
	}
	var m module
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %v in %s", method, path, err, b)
	}
	if h.Get("ETag") != `"`+m.Etag+`"` || m.Etag == "" {
		t.Errorf("%s %s: ETag header %q, JSON etag %q: want the same, quoted in the header", method, path, h.Get("ETag"), m.Etag)
	}
	return m
}

// wantError checks a status and the error code of an IoT Hub error body.
func wantError(t *testing.T, code int, body []byte, wantCode int, errorCode, what string) {
	t.Helper()
	var e struct{ Message string }
	if code != wantCode || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Message, "ErrorCode:"+errorCode+";") {
		t.Errorf("%s = %d %s, want %d with ErrorCode:%s", what, code, body, wantCode, errorCode)
	}
}

func TestModuleRegistry(t *testing.T) {
	s := start(t, nil)
	k1, k2 := []byte("new-primary-key-0123456789abcdef"), []byte("new-secondary-key-0123456789abcd")

	// Create with the keys given.
	m := moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k1, k2), nil)
	if m.ModuleID != "relay" || m.DeviceID != dev || m.GenerationID == "" || m.ConnectionState != "Disconnected" ||
		m.Authentication.Type != "sas" || m.Authentication.SymmetricKey.PrimaryKey != b64(k1) || m.Authentication.SymmetricKey.SecondaryKey != b64(k2) {
		t.Errorf("created module %+v", m)
	}
	// A second create is a conflict; the module is unchanged.
	code, body, _ := request(t, s, "PUT", "/devices/edge1/modules/relay"+api, `{"moduleId":"relay","deviceId":"edge1"}`, nil)
	wantError(t, code, body, 409, "ModuleAlreadyExistsOnDevice", "second create")

	// Create with generated keys: aziot-identityd's create has no
	// authentication at all.
	g := moduleCall(t, s, "PUT", "/devices/edge1/modules/gen", `{"moduleId":"gen","deviceId":"edge1","managedBy":"aziot"}`, nil)
	p, err1 := base64.StdEncoding.DecodeString(g.Authentication.SymmetricKey.PrimaryKey)
	sec, err2 := base64.StdEncoding.DecodeString(g.Authentication.SymmetricKey.SecondaryKey)
	if err1 != nil || err2 != nil || len(p) != 32 || len(sec) != 32 || string(p) == string(sec) || g.ManagedBy != "aziot" || g.Authentication.Type != "sas" {
		t.Errorf("module with generated keys %+v", g)
	}
	// Empty keys are generated too.
	e := moduleCall(t, s, "PUT", "/devices/edge1/modules/empty", `{"authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"type":"sas"}}`, nil)
	if len(e.Authentication.SymmetricKey.PrimaryKey) != 44 {
		t.Errorf("module with empty keys %+v", e)
	}

	// Refused bodies.
	for _, tc := range []struct{ name, body string }{
		{"one key", `{"authentication":{"symmetricKey":{"primaryKey":"` + b64(k1) + `"},"type":"sas"}}`},
		{"short key", sasBody(dev, "bad", []byte("short"), k2)},
		{"not base64", `{"authentication":{"symmetricKey":{"primaryKey":"***","secondaryKey":"***"},"type":"sas"}}`},
		{"x509", `{"authentication":{"x509Thumbprint":{"primaryThumbprint":"AB"},"type":"selfSigned"}}`},
		{"other module", `{"moduleId":"other","deviceId":"edge1"}`},
		{"other device", `{"moduleId":"bad","deviceId":"edge2"}`},
		{"not JSON", `{`},
	} {
		code, body, _ := request(t, s, "PUT", "/devices/edge1/modules/bad"+api, tc.body, nil)
		wantError(t, code, body, 400, "ArgumentInvalid", "PUT with "+tc.name)
	}
	if _, body, _ := request(t, s, "PUT", "/devices/edge1/modules/bad"+api, `{"authentication":{"type":"certificateAuthority"}}`, nil); !strings.Contains(string(body), `only \"sas\"`) {
		t.Errorf("unsupported type answered %s, want it to say only sas is supported", body)
	}

	// GET and list.
	if got := moduleCall(t, s, "GET", "/devices/edge1/modules/relay", "", nil); got != m {
		t.Errorf("GET = %+v, want %+v", got, m)
	}
	code, body, _ = request(t, s, "GET", "/devices/edge1/modules/nobody"+api, "", nil)
	wantError(t, code, body, 404, "ModuleNotFound", "GET unknown module")
	code, body, _ = request(t, s, "GET", "/devices/edge1/modules"+api, "", nil)
	var list []module
	if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list) != 3 || list[0].ModuleID != "empty" || list[1] != g || list[2] != m {
		t.Errorf("list = %d %s", code, body)
	}

	// Updates: If-Match the ETag or *, never a stale one; only existing
	// modules.
	k3 := []byte("third-primary-key-0123456789abcd")
	u := moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k3, k2), map[string]string{"If-Match": `"` + m.Etag + `"`})
	if u.GenerationID != m.GenerationID || u.Etag == m.Etag || u.Authentication.SymmetricKey.PrimaryKey != b64(k3) {
		t.Errorf("updated module %+v after %+v", u, m)
	}
	code, body, _ = request(t, s, "PUT", "/devices/edge1/modules/relay"+api, sasBody(dev, "relay", k1, k2), map[string]string{"If-Match": `"` + m.Etag + `"`})
	wantError(t, code, body, 412, "PreconditionFailed", "update with a stale ETag")
	star := moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k1, k2), map[string]string{"If-Match": "*"})
	if star.Etag == u.Etag || star.Authentication.SymmetricKey.PrimaryKey != b64(k1) {
		t.Errorf("module after If-Match * %+v", star)
	}
	code, body, _ = request(t, s, "PUT", "/devices/edge1/modules/nobody"+api, `{}`, map[string]string{"If-Match": "*"})
	wantError(t, code, body, 404, "ModuleNotFound", "update of a missing module")
	code, body, _ = request(t, s, "PUT", "/devices/edge1/modules/relay"+api, `{}`, map[string]string{"If-Match": star.Etag})
	wantError(t, code, body, 400, "ArgumentInvalid", "If-Match without quotes")

	// Unknown device: 404 DeviceNotFound on every route.
	for _, r := range []struct{ method, path string }{
		{"PUT", "/devices/edge9/modules/relay"}, {"GET", "/devices/edge9/modules/relay"},
		{"GET", "/devices/edge9/modules"}, {"DELETE", "/devices/edge9/modules/relay"},
	} {
		code, body, _ := request(t, s, r.method, r.path+api, `{}`, nil)
		wantError(t, code, body, 404, "DeviceNotFound", r.method+" "+r.path)
	}

	// DELETE: If-Match optional, a stale one refused; then it is gone.
	code, body, _ = request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", map[string]string{"If-Match": `"` + u.Etag + `"`})
	wantError(t, code, body, 412, "PreconditionFailed", "DELETE with a stale ETag")
	if code, body, _ := request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", map[string]string{"If-Match": `"` + star.Etag + `"`}); code != 204 || len(body) != 0 {
		t.Errorf("DELETE = %d %s, want 204", code, body)
	}
	if code, _, _ := request(t, s, "DELETE", "/devices/edge1/modules/gen"+api, "", nil); code != 204 {
		t.Errorf("DELETE without If-Match = %d, want 204", code)
	}
	code, body, _ = request(t, s, "GET", "/devices/edge1/modules/relay"+api, "", nil)
	wantError(t, code, body, 404, "ModuleNotFound", "GET after DELETE")
	code, body, _ = request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", nil)
	wantError(t, code, body, 404, "ModuleNotFound", "second DELETE")
	// Created again, it is a new generation.
	if again := moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", `{}`, nil); again.GenerationID == m.GenerationID {
		t.Errorf("re-created module has the deleted one's generationId %s", again.GenerationID)
	}
}

func TestModuleRegistryAuth(t *testing.T) {
	ownerKey := []byte("iothubowner-key-0123456789abcdef")
	key2 := []byte("device-2-primary-key-0123456789a")
	s := start(t, func(c *hubemu.Config) {
		c.ServicePolicies = map[string][]byte{"iothubowner": ownerKey}
		c.Key = hubtest.Keys(map[string][]byte{dev: keyDev, "edge2": key2})
	})
	hub, now := s.HubHostName(), s.Now()
	// deviceToken is a token as aziot-identityd signs it: lower-case
	// audience, no skn.
	deviceToken := func(device string, key []byte, expiry time.Time) string {
		return hubtest.Token(t, strings.ToLower(sas.DeviceResource(hub, device)), key, expiry)
	}
	own := map[string]string{"Authorization": deviceToken(dev, keyDev, now.Add(30*time.Second))}

	// The flow of aziot-identityd with the device's own token: create, update
	// with the derived keys under If-Match *, get, list, delete.
	moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", `{"moduleId":"relay","deviceId":"edge1"}`, own)
	k1, k2 := []byte("derived-primary-0123456789abcdef"), []byte("derived-secondary-0123456789abcd")
	own["If-Match"] = "*"
	moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k1, k2), own)
	delete(own, "If-Match")
	moduleCall(t, s, "GET", "/devices/edge1/modules/relay", "", own)
	if code, body, _ := request(t, s, "GET", "/devices/edge1/modules"+api, "", own); code != 200 || !strings.Contains(string(body), `"moduleId":"relay"`) {
		t.Errorf("list with the device's token = %d %s", code, body)
	}

	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"another device's token", "GET", "/devices/edge1/modules/relay", deviceToken("edge2", key2, now.Add(time.Hour)), 401},
		{"own token on another device", "GET", "/devices/edge2/modules", deviceToken(dev, keyDev, now.Add(time.Hour)), 401},
		{"another device's audience, own key", "GET", "/devices/edge1/modules/relay", deviceToken("edge2", keyDev, now.Add(time.Hour)), 401},
		{"own audience, another key", "GET", "/devices/edge1/modules/relay", deviceToken(dev, key2, now.Add(time.Hour)), 401},
		{"expired", "GET", "/devices/edge1/modules/relay", deviceToken(dev, keyDev, now.Add(-10*time.Minute)), 401},
		{"within the skew", "GET", "/devices/edge1/modules/relay", deviceToken(dev, keyDev, now.Add(-2*time.Minute)), 200},
		{"module token", "GET", "/devices/edge1/modules/relay", hubtest.Token(t, sas.ModuleResource(hub, dev, "relay"), k1, now.Add(time.Hour)), 401},
		{"device token on a twin", "GET", "/twins/edge1", deviceToken(dev, keyDev, now.Add(time.Hour)), 401},
		{"device token on applyConfigurationContent", "POST", "/devices/edge1/applyConfigurationContent", deviceToken(dev, keyDev, now.Add(time.Hour)), 401},
		{"none", "GET", "/devices/edge1/modules/relay", "", 401},
		{"service token", "GET", "/devices/edge1/modules/relay", s.ServiceToken(t, "iothubowner", ownerKey, time.Hour), 200},
		{"service token, list of another device", "GET", "/devices/edge2/modules", s.ServiceToken(t, "iothubowner", ownerKey, time.Hour), 200},
	} {
		code, body, _ := request(t, s, tc.method, tc.path+api, `{"modulesContent":{}}`, map[string]string{"Authorization": tc.auth})
		if code != tc.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tc.name, tc.method, tc.path, code, body, tc.want)
		}
	}
	// Another device's token changes nothing.
	other := map[string]string{"Authorization": deviceToken("edge2", key2, now.Add(time.Hour)), "If-Match": "*"}
	if code, _, _ := request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", other); code != 401 {
		t.Errorf("DELETE with another device's token = %d, want 401", code)
	}
	own["If-Match"] = "*"
	if code, body, _ := request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", own); code != 204 {
		t.Errorf("DELETE with the device's token = %d %s, want 204", code, body)
	}
}

func TestModuleRegistryConnect(t *testing.T) {
	// Config.Key derives keyA for edge1/a, as the lab derives module keys.
	s := start(t, nil)
	connect := func(key []byte) byte {
		t.Helper()
		rc, err := hubtest.ConnectCode(s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", key, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	if rc := connect(keyA); rc != 0 {
		t.Fatalf("CONNECT with the derived key before the registry = %d", rc)
	}
	derivedLost, derivedCh := onLost()
	s.Connect(t, dev, "a", keyA, derivedLost)

	newKey := []byte("registry-key-a-0123456789abcdefg")
	moduleCall(t, s, "PUT", "/devices/edge1/modules/a", sasBody(dev, "a", newKey, keyB), nil)
	if rc := connect(newKey); rc != 0 {
		t.Errorf("CONNECT with the registry key = %d, want 0", rc)
	}
	if rc := connect(keyA); rc != 5 {
		t.Errorf("CONNECT with the derived key = %d, want 5", rc)
	}
	if rc := connect(keyB); rc != 0 {
		t.Errorf("CONNECT with the secondary key = %d, want 0 (edgeHub takes either key)", rc)
	}
	// The derived key's connection ends at the next re-authentication
	// (every second here).
	lost(t, derivedCh, 5*time.Second, "connection with the derived key")

	// The twin of a registry module is there.
	if code, body := call(t, s, "GET", "/twins/edge1/modules/a"+api, ""); code != 200 {
		t.Errorf("twin of the registry module = %d %s", code, body)
	}

	newLost, newCh := onLost()
	s.Connect(t, dev, "a", newKey, newLost)
	if m := moduleCall(t, s, "GET", "/devices/edge1/modules/a", "", nil); m.ConnectionState != "Connected" {
		t.Errorf("connectionState %q while connected, want Connected", m.ConnectionState)
	}
	if code, _, _ := request(t, s, "DELETE", "/devices/edge1/modules/a"+api, "", map[string]string{"If-Match": "*"}); code != 204 {
		t.Fatalf("DELETE = %d", code)
	}
	// Deleted, the module is unknown, whatever Config.Key says.
	for _, k := range [][]byte{newKey, keyA} {
		if rc := connect(k); rc != 5 {
			t.Errorf("CONNECT after DELETE = %d, want 5", rc)
		}
	}
	lost(t, newCh, 5*time.Second, "connection of the deleted module")
	if code, _ := call(t, s, "GET", "/twins/edge1/modules/a"+api, ""); code != 404 {
		t.Errorf("twin of the deleted module = %d, want 404", code)
	}
	// Module b, never in the registry, still has Config.Key's key.
	if rc, err := hubtest.ConnectCode(s.ClientOptions(dev, "b", s.ModuleToken(t, dev, "b", keyB, time.Hour))); err != nil || rc != 0 {
		t.Errorf("CONNECT of b = %d %v, want 0", rc, err)
	}
}

// With a Config.Key that knows devices only, as the lab's registry, a
// module exists only once created in the module registry, as in IoT Hub:
// a module name without an identity (a typo) is refused with CONNACK 5,
// and so is a module signing with another module's key; its device's key
// signs for it, as edgeHub takes it.
func TestModuleWithoutIdentityRefused(t *testing.T) {
	s := start(t, func(c *hubemu.Config) { c.Key = hubtest.Keys(map[string][]byte{dev: keyDev}) })
	connect := func(module string, key []byte) byte {
		t.Helper()
		rc, err := hubtest.ConnectCode(s.ClientOptions(dev, module, s.ModuleToken(t, dev, module, key, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	a := moduleCall(t, s, "PUT", "/devices/edge1/modules/a", `{"moduleId":"a","deviceId":"edge1"}`, nil)
	b := moduleCall(t, s, "PUT", "/devices/edge1/modules/b", `{"moduleId":"b","deviceId":"edge1"}`, nil)
	keyOf := func(m module) []byte {
		k, err := base64.StdEncoding.DecodeString(m.Authentication.SymmetricKey.PrimaryKey)
		if err != nil || len(k) != 32 {
			t.Fatalf("module %s: generated primary key %q, want 32 bytes of base64", m.ModuleID, m.Authentication.SymmetricKey.PrimaryKey)
		}
		return k
	}
	ka, kb := keyOf(a), keyOf(b)
	for _, tc := range []struct {
		what, module string
		key          []byte
		want         byte
	}{
		{"a with its own key", "a", ka, 0},
		{"b with its own key", "b", kb, 0},
		{"a typo of a, signed with a's key", "a2", ka, 5},
		{"a module without identity, signed with the device's key", "filter", keyDev, 5},
		{"a signing with b's key", "a", kb, 5},
		{"b signing with a's key", "b", ka, 5},
		{"a signing with another device's key", "a", []byte("device-2-primary-key-0123456789a"), 5},
		// edgeHub takes a module's token signed with its device's key
		// (allowDeviceAuthForModule), for a module that has an identity.
		{"a signing with its device's key", "a", keyDev, 0},
	} {
		if rc := connect(tc.module, tc.key); rc != tc.want {
			t.Errorf("CONNECT as %s = %d, want %d", tc.what, rc, tc.want)
		}
	}
}

// IoT Hub creates the $edgeAgent and $edgeHub identities of an IoT Edge
// device with it, without keys; aziot-identityd gives them keys with an
// update. Devices that are not IoT Edge devices have no such modules.
func TestEdgeDeviceSystemModules(t *testing.T) {
	s := start(t, func(c *hubemu.Config) {
		c.Key = hubtest.Keys(map[string][]byte{dev: keyDev, "plain": keyB})
		c.Devices = func() []string { return []string{dev} }
	})
	connect := func(module string, key []byte) byte {
		t.Helper()
		rc, err := hubtest.ConnectCode(s.ClientOptions(dev, module, s.ModuleToken(t, dev, module, key, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	// A CONNECT is the first thing to ask about the device: the keyless
	// identity refuses it.
	if rc := connect("$edgeAgent", keyDev); rc != 5 {
		t.Errorf("CONNECT as the keyless $edgeAgent = %d, want 5", rc)
	}
	code, body, _ := request(t, s, "GET", "/devices/edge1/modules"+api, "", nil)
	var list []module
	if code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list = %d %s", code, body)
	}
	if len(list) != 2 || list[0].ModuleID != "$edgeAgent" || list[1].ModuleID != "$edgeHub" {
		t.Fatalf("modules of the IoT Edge device = %s, want $edgeAgent and $edgeHub", body)
	}
	for _, m := range list {
		if m.Authentication.Type != "none" || m.Authentication.SymmetricKey.PrimaryKey != "" || m.GenerationID == "" || m.Etag == "" {
			t.Errorf("system module %+v, want authentication none without keys, a generation and an etag", m)
		}
	}
	code, body, _ = request(t, s, "PUT", "/devices/edge1/modules/$edgeHub"+api, `{"moduleId":"$edgeHub","deviceId":"edge1"}`, nil)
	wantError(t, code, body, 409, "ModuleAlreadyExistsOnDevice", "create of $edgeHub")

	key := []byte("edgehub-primary-key-0123456789ab")
	m := moduleCall(t, s, "PUT", "/devices/edge1/modules/$edgeHub", sasBody(dev, "$edgeHub", key, keyB), map[string]string{"If-Match": "*"})
	if m.GenerationID != list[1].GenerationID || m.Authentication.Type != "sas" {
		t.Errorf("$edgeHub given keys: %+v, want generation %s kept and type sas", m, list[1].GenerationID)
	}
	if rc := connect("$edgeHub", key); rc != 0 {
		t.Errorf("CONNECT as $edgeHub with its key = %d, want 0", rc)
	}
	if rc := connect("$edgeAgent", key); rc != 5 {
		t.Errorf("CONNECT as $edgeAgent with $edgeHub's key = %d, want 5", rc)
	}
	// Deleted, a system module stays deleted.
	if code, _, _ := request(t, s, "DELETE", "/devices/edge1/modules/$edgeAgent"+api, "", nil); code != 204 {
		t.Fatalf("DELETE $edgeAgent = %d", code)
	}
	code, body, _ = request(t, s, "GET", "/devices/edge1/modules/$edgeAgent"+api, "", nil)
	wantError(t, code, body, 404, "ModuleNotFound", "GET of the deleted $edgeAgent")

	if code, body, _ := request(t, s, "GET", "/devices/plain/modules"+api, "", nil); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("modules of a device that is not an IoT Edge device = %d %s, want 200 []", code, body)
	}

	// A system module Config.Key gives a key keeps it.
	withKey := start(t, func(c *hubemu.Config) {
		c.Key = hubtest.Keys(map[string][]byte{dev: keyDev, dev + "/$edgeAgent": keyA})
		c.Devices = func() []string { return []string{dev} }
	})
	if rc, err := hubtest.ConnectCode(withKey.ClientOptions(dev, "$edgeAgent", withKey.ModuleToken(t, dev, "$edgeAgent", keyA, time.Hour))); err != nil || rc != 0 {
		t.Errorf("CONNECT as $edgeAgent with Config.Key's key = %d %v, want 0", rc, err)
	}
}
