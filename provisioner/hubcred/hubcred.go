// Package hubcred reads an IoT Hub device identity with a symmetric key as
// a technician copies it from the portal or the Azure CLI: the hub's host
// name, the device ID and the primary key, or the device's connection
// string. It checks each part against what IoT Hub issues, so that a
// mistake is refused before anything reaches the TPM.
//
// No error of this package quotes its input, and a Credential prints
// without its key: a key pasted into the wrong field must not end up on a
// screen or in a log.
package hubcred

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// ErrInput is the category of every error of this package: the input is
// not a device identity IoT Hub could have issued.
var ErrInput = errors.New("not a device identity")

// Credential is a device identity with its primary key. The caller owns
// Key and zeroes it (Zero) once it is in the TPM.
type Credential struct {
	HostName string
	DeviceID string
	Key      []byte
}

// String shows the identity without the key.
func (c Credential) String() string {
	return "HostName=" + c.HostName + ";DeviceId=" + c.DeviceID + ";SharedAccessKey=<redacted>"
}

// Zero overwrites the key in memory.
func (c *Credential) Zero() {
	clear(c.Key)
	c.Key = nil
}

// Symmetric key lengths IoT Hub accepts for a device, decoded: 16 to 64
// bytes (azure-iot-sdk-csharp iothub/service/src/Authentication/SymmetricKey.cs
// checks the length against SecurityConstants.MinKeyLengthInBytes and
// MaxKeyLengthInBytes). The portal and 'az iot hub device-identity create'
// generate 32.
const (
	MinKeyLen = 16
	MaxKeyLen = 64
)

// CheckHostName returns why host is not an IoT hub's host name, or nil:
// sas.CheckHubHostName, the rule provisioner/tpm checks too.
func CheckHostName(host string) error {
	if err := sas.CheckHubHostName(host); err != nil {
		return fmt.Errorf("%w: %w", ErrInput, err)
	}
	return nil
}

// CheckDeviceID returns why id is not a device ID IoT Hub issues, or nil.
func CheckDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: the device ID is empty", ErrInput)
	}
	if !sas.ValidID(id) {
		return fmt.Errorf("%w: the device ID must be 1 to 128 ASCII letters, digits or - : . + %% _ # * ? ! ( ) , = @ ; $ '", ErrInput)
	}
	return nil
}

// DecodeKey decodes a primary key as the portal shows it: standard base64
// with padding, surrounding white space ignored, of MinKeyLen to MaxKeyLen
// bytes. The caller zeroes the result.
func DecodeKey(b64 []byte) ([]byte, error) {
	b64 = bytes.TrimSpace(b64)
	if len(b64) == 0 {
		return nil, fmt.Errorf("%w: the key is empty", ErrInput)
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(key, b64)
	if err != nil {
		clear(key)
		// err names the offset of the first bad byte, never the byte.
		return nil, fmt.Errorf("%w: the key is not standard base64 (the primary key as the portal shows it, ending in '=')", ErrInput)
	}
	key = key[:n]
	if n < MinKeyLen || n > MaxKeyLen {
		clear(key)
		return nil, fmt.Errorf("%w: the key is %d bytes once decoded; IoT Hub keys are %d to %d", ErrInput, n, MinKeyLen, MaxKeyLen)
	}
	return key, nil
}

// New checks host, device and the base64 key and returns the credential.
func New(host, device string, b64Key []byte) (*Credential, error) {
	if err := CheckHostName(host); err != nil {
		return nil, err
	}
	if err := CheckDeviceID(device); err != nil {
		return nil, err
	}
	key, err := DecodeKey(b64Key)
	if err != nil {
		return nil, err
	}
	return &Credential{HostName: host, DeviceID: device, Key: key}, nil
}

// ParseConnectionString parses a device connection string, as the device's
// page in the portal shows it and 'az iot hub device-identity
// connection-string show' prints it:
//
//	HostName=<hub>.azure-devices.net;DeviceId=<id>;SharedAccessKey=<base64>
//
// Each field once, in any order. What is not a device's own key is
// refused with the reason: a SharedAccessSignature (a token that expires,
// not the key), a module's (ModuleId), a service policy's
// (SharedAccessKeyName), a downstream device's (GatewayHostName), an X.509
// device's (x509=true). It reads s as bytes so that the caller can zero
// them.
func ParseConnectionString(s []byte) (*Credential, error) {
	if !bytes.Contains(s, []byte(";")) {
		if key, err := DecodeKey(s); err == nil {
			clear(key)
			return nil, fmt.Errorf("%w: a key alone, not a connection string: give the key with the hub's host name and the device ID, or the device's whole connection string", ErrInput)
		}
	}
	var host, device string
	var keyField []byte
	seen := map[string]bool{}
	i := 0
	for part := range bytes.SplitSeq(bytes.TrimSpace(s), []byte(";")) {
		if len(bytes.TrimSpace(part)) == 0 {
			continue
		}
		i++
		name, value, ok := bytes.Cut(part, []byte("="))
		if !ok {
			return nil, fmt.Errorf("%w: connection string field %d has no '='", ErrInput, i)
		}
		field := string(bytes.TrimSpace(name))
		switch field {
		case "HostName", "DeviceId", "SharedAccessKey":
		case "SharedAccessSignature":
			return nil, fmt.Errorf("%w: the connection string holds a SharedAccessSignature, a token that expires, not the device's key: copy the primary connection string from the device's page", ErrInput)
		case "ModuleId":
			return nil, fmt.Errorf("%w: a module's connection string (it has ModuleId); give the device's", ErrInput)
		case "SharedAccessKeyName":
			return nil, fmt.Errorf("%w: a shared access policy's connection string (it has SharedAccessKeyName), for services; give the device's", ErrInput)
		case "GatewayHostName":
			return nil, fmt.Errorf("%w: a downstream device's connection string (it has GatewayHostName); this identity connects to IoT Hub itself: leave GatewayHostName out", ErrInput)
		case "x509":
			return nil, fmt.Errorf("%w: an X.509 device's connection string (x509=true) has no key", ErrInput)
		default:
			return nil, fmt.Errorf("%w: connection string field %d is not HostName, DeviceId or SharedAccessKey", ErrInput, i)
		}
		if seen[field] {
			return nil, fmt.Errorf("%w: %s given twice in the connection string", ErrInput, field)
		}
		seen[field] = true
		value = bytes.TrimSpace(value)
		switch field {
		case "HostName":
			host = string(value)
		case "DeviceId":
			device = string(value)
		case "SharedAccessKey":
			keyField = value
		}
	}
	for _, f := range []string{"HostName", "DeviceId", "SharedAccessKey"} {
		if !seen[f] {
			return nil, fmt.Errorf("%w: the connection string has no %s", ErrInput, f)
		}
	}
	return New(host, device, keyField)
}
