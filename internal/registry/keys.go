package registry

import (
	"crypto/hmac"
	"crypto/sha256"
)

// ModuleKey is the key of module moduleID of a device whose key is
// deviceKey, in the lab: derived, so that the hub emulator and the
// workload API emulator, separate processes, agree on it without sharing
// state. (IoT Hub gives each module identity a random key of its own.)
func ModuleKey(deviceKey []byte, moduleID string) []byte {
	m := hmac.New(sha256.New, deviceKey)
	m.Write([]byte("module/" + moduleID))
	return m.Sum(nil)
}

// Lookup returns a key function for an emulator of hub: devices' keys as
// the file at path holds them now (it is re-read on every call, since the
// DPS emulator of another process adds devices to it), modules' derived
// by ModuleKey.
func Lookup(path, hub string) func(deviceID, moduleID string) ([]byte, bool) {
	return func(deviceID, moduleID string) ([]byte, bool) {
		r, err := New(path)
		if err != nil {
			return nil, false
		}
		d, ok := r.Get(hub, deviceID)
		if !ok || d.Status == StatusDisabled {
			return nil, false
		}
		if moduleID == "" {
			return d.PrimaryKey, true
		}
		return ModuleKey(d.PrimaryKey, moduleID), true
	}
}
