// Package hubservice is a client of IoT Hub's service REST API for what
// deployments need (docs/edge-protocol.md#iot-hub-service-api): automatic deployments
// (configurations), applying content to one device, twins, and module
// identities. It authenticates with a shared access policy, or as an edge
// device with its own key for the device's module identities, with a
// fresh SAS token on each request, and always verifies TLS.
package hubservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/azrest"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// APIVersion is the service API version the Python SDK uses.
const APIVersion = "2021-04-12"

// tokenTTL is the life of each request's SAS token.
const tokenTTL = time.Hour

// Client calls IoT Hub's service API with a shared access policy
// (iothubowner, or one with registry write and service connect), or as a
// device. Set Conn or Device; a Client is safe for concurrent use.
type Client struct {
	Conn sas.Policy
	// Device, when not nil, signs the requests instead of Conn: the
	// device's own credentials, which IoT Hub takes for the device's
	// module identities only.
	Device *Device
	// Endpoint is the base URL; empty means "https://" and the hub's host
	// name.
	Endpoint string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
}

// Configuration is an automatic deployment.
type Configuration struct {
	ID            string            `json:"id"`
	SchemaVersion string            `json:"schemaVersion,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Content is {"modulesContent": {...}}.
	Content         json.RawMessage `json:"content"`
	TargetCondition string          `json:"targetCondition"`
	Priority        int             `json:"priority"`
	Metrics         *Metrics        `json:"metrics,omitempty"`
	// Set by IoT Hub.
	SystemMetrics      *Metrics  `json:"systemMetrics,omitempty"`
	ETag               string    `json:"etag,omitempty"`
	CreatedTimeUTC     time.Time `json:"createdTimeUtc,omitzero"`
	LastUpdatedTimeUTC time.Time `json:"lastUpdatedTimeUtc,omitzero"`
}

// Metrics are named queries and, from IoT Hub, their counts.
// systemMetrics has targetedCount and appliedCount.
type Metrics struct {
	Queries map[string]string `json:"queries,omitempty"`
	Results map[string]int64  `json:"results,omitempty"`
}

// PutConfiguration creates or updates a configuration and returns it as
// stored. A non-empty ifMatch (an ETag, or "*") makes IoT Hub refuse with
// 412 when the stored one has another ETag.
func (c *Client) PutConfiguration(ctx context.Context, cfg Configuration, ifMatch string) (*Configuration, error) {
	var out Configuration
	if err := c.do(ctx, http.MethodPut, "/configurations/"+url.PathEscape(cfg.ID), ifMatch, cfg, &out); err != nil {
		return nil, fmt.Errorf("put configuration %q: %w", cfg.ID, err)
	}
	return &out, nil
}

// GetConfiguration returns configuration id.
func (c *Client) GetConfiguration(ctx context.Context, id string) (*Configuration, error) {
	var out Configuration
	if err := c.do(ctx, http.MethodGet, "/configurations/"+url.PathEscape(id), "", nil, &out); err != nil {
		return nil, fmt.Errorf("get configuration %q: %w", id, err)
	}
	return &out, nil
}

// ListConfigurations returns up to top configurations (0: IoT Hub's
// default).
func (c *Client) ListConfigurations(ctx context.Context, top int) ([]Configuration, error) {
	path := "/configurations"
	if top > 0 {
		path += "?top=" + strconv.Itoa(top)
	}
	var out []Configuration
	if err := c.do(ctx, http.MethodGet, path, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list configurations: %w", err)
	}
	return out, nil
}

// DeleteConfiguration deletes configuration id; ifMatch as in
// PutConfiguration.
func (c *Client) DeleteConfiguration(ctx context.Context, id, ifMatch string) error {
	if err := c.do(ctx, http.MethodDelete, "/configurations/"+url.PathEscape(id), ifMatch, nil, nil); err != nil {
		return fmt.Errorf("delete configuration %q: %w", id, err)
	}
	return nil
}

// ApplyConfigurationContent sets one edge device's modules from content,
// {"modulesContent": {...}}.
func (c *Client) ApplyConfigurationContent(ctx context.Context, deviceID string, content json.RawMessage) error {
	if err := c.do(ctx, http.MethodPost, "/devices/"+url.PathEscape(deviceID)+"/applyConfigurationContent", "", content, nil); err != nil {
		return fmt.Errorf("apply configuration content to %q: %w", deviceID, err)
	}
	return nil
}

// Twin returns the twin of a device (module "") or module, as JSON.
func (c *Client) Twin(ctx context.Context, deviceID, moduleID string) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, http.MethodGet, twinPath(deviceID, moduleID), "", nil, &out); err != nil {
		return nil, fmt.Errorf("get twin of %s: %w", Identity(deviceID, moduleID), err)
	}
	return out, nil
}

// UpdateTwin patches a twin's tags (devices) or desired properties, as
// JSON merge, and returns the twin.
func (c *Client) UpdateTwin(ctx context.Context, deviceID, moduleID string, patch json.RawMessage) (json.RawMessage, error) {
	return c.UpdateTwinIf(ctx, deviceID, moduleID, patch, "")
}

// UpdateTwinIf is UpdateTwin only while the twin's ETag (its JSON
// "etag") is ifMatch; "" or "*" update any. IoT Hub answers a twin
// changed since with 412 PreconditionFailed.
func (c *Client) UpdateTwinIf(ctx context.Context, deviceID, moduleID string, patch json.RawMessage, ifMatch string) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, http.MethodPatch, twinPath(deviceID, moduleID), ifMatch, patch, &out); err != nil {
		return nil, fmt.Errorf("update twin of %s: %w", Identity(deviceID, moduleID), err)
	}
	return out, nil
}

func twinPath(deviceID, moduleID string) string {
	p := "/twins/" + url.PathEscape(deviceID)
	if moduleID != "" {
		p += "/modules/" + url.PathEscape(moduleID)
	}
	return p
}

func Identity(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}

// Device is an edge device's credentials, as aziot-identityd signs its
// calls on the device's module identities: a token for the audience
// {hub}/devices/{device} with no key name, signed with the device's key
// (aziot-cloud-client-async src/connector.rs).
type Device struct {
	HubHostName, DeviceID string
	// Signer holds the device's key: the TPM, or sas.Key.
	Signer sas.Signer
}

// hostName is the hub's host name of the credentials in use.
func (c *Client) hostName() string {
	if c.Device != nil {
		return c.Device.HubHostName
	}
	return c.Conn.HostName
}

// token is a SAS token of the credentials in use, valid until expiry.
func (c *Client) token(ctx context.Context, expiry time.Time) (string, error) {
	if d := c.Device; d != nil {
		if d.HubHostName == "" || d.DeviceID == "" || d.Signer == nil {
			return "", errors.New("incomplete device credentials")
		}
		return sas.New(ctx, d.Signer, sas.DeviceResource(d.HubHostName, d.DeviceID), "", expiry)
	}
	if c.Conn.HostName == "" || len(c.Conn.Key) == 0 {
		return "", errors.New("no service connection string")
	}
	// sr = the hub's host name, skn = the policy (docs/edge-protocol.md#iot-hub-service-api).
	return c.Conn.Token(ctx, expiry)
}

// do sends one request of api-version APIVersion: body (when not nil) as
// JSON, a json.RawMessage as it is; a 2xx response is decoded into out
// (when not nil), anything else becomes a *ServiceError.
func (c *Client) do(ctx context.Context, method, path, ifMatch string, body, out any) error {
	return c.doVersion(ctx, APIVersion, method, path, ifMatch, body, out)
}

// doVersion is do with another api-version.
func (c *Client) doVersion(ctx context.Context, apiVersion, method, path, ifMatch string, body, out any) error {
	_, err := c.send(ctx, apiVersion, method, path, ifMatch, body, out)
	return err
}

// send is doVersion that also returns the response's header.
func (c *Client) send(ctx context.Context, apiVersion, method, path, ifMatch string, body, out any) (http.Header, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	token, err := c.token(ctx, now().Add(tokenTTL))
	if err != nil {
		return nil, err
	}
	var data []byte
	if body != nil {
		var ok bool
		if data, ok = body.(json.RawMessage); !ok {
			var err error
			if data, err = json.Marshal(body); err != nil {
				return nil, err
			}
		}
	}
	endpoint := c.Endpoint
	if endpoint == "" {
		endpoint = "https://" + c.hostName()
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	// IoT Hub wants the ETag quoted in If-Match; its JSON carries it bare.
	if ifMatch != "" && ifMatch != "*" && !strings.HasPrefix(ifMatch, `"`) {
		ifMatch = `"` + ifMatch + `"`
	}
	resp, err := azrest.Do(ctx, c.HTTP, token, azrest.Request{
		Method: method, URL: endpoint + path + sep + "api-version=" + apiVersion, IfMatch: ifMatch, Body: data,
	})
	if err != nil {
		return nil, err
	}
	status, data := resp.Status, resp.Body
	if status < 200 || status > 299 {
		return nil, parseError(status, resp.Header.Get("iothub-errorcode"), data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return resp.Header, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	return resp.Header, nil
}

// ServiceError is an error response from IoT Hub.
type ServiceError struct {
	HTTPStatus int
	// Code is the ErrorCode of the message ("IotHubUnauthorizedAccess",
	// "PreconditionFailed", …), or the iothub-errorcode header's; empty
	// when it had none.
	Code string
	// Number is the numeric errorCode of the newer JSON form (404103 for
	// DeviceNotOnline), 0 when it had none.
	Number  int
	Message string
}

func (e *ServiceError) Error() string {
	s := fmt.Sprintf("IoT Hub answered HTTP %d", e.HTTPStatus)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Number != 0 {
		s += fmt.Sprintf(" (%d)", e.Number)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// parseError reads IoT Hub's error body, {"Message":"ErrorCode:<code>;<text>", ...}
// or, as direct methods answer, a Message that is itself JSON:
// {"errorCode":404103,"trackingId":…,"message":<text>,"info":{…},"timestampUtc":…}
// (azure-iot-cli-extension issue 54, azure-iot-sdk-java issue 640).
// code is the iothub-errorcode header ("DeviceNotOnline"), "" when none.
func parseError(status int, code string, data []byte) *ServiceError {
	e := &ServiceError{HTTPStatus: status, Code: code}
	var body struct {
		Message string `json:"Message"`
	}
	if json.Unmarshal(data, &body) != nil || body.Message == "" {
		e.Message = clip(strings.TrimSpace(string(data)))
		return e
	}
	msg := body.Message
	var inner struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if rest, ok := strings.CutPrefix(msg, "ErrorCode:"); ok {
		e.Code, msg, _ = strings.Cut(rest, ";")
	} else if json.Unmarshal([]byte(msg), &inner) == nil && inner.ErrorCode != 0 {
		e.Number, msg = inner.ErrorCode, inner.Message
	}
	e.Message = clip(msg)
	return e
}

// clip shortens what an error quotes from a response.
func clip(s string) string {
	const max = 300
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
