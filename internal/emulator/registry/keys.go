package registry

// Lookup returns a key function for an emulator of hub: devices' keys as
// the file at path holds them now (it is re-read on every call, since the
// DPS emulator of another process adds devices to it). Modules have no key
// here: as in IoT Hub, a module identity is made in the hub's module
// registry, with keys of its own.
func Lookup(path, hub string) func(deviceID, moduleID string) ([]byte, bool) {
	return func(deviceID, moduleID string) ([]byte, bool) {
		if moduleID != "" {
			return nil, false
		}
		r, err := New(path)
		if err != nil {
			return nil, false
		}
		d, ok := r.Get(hub, deviceID)
		if !ok || d.Status == StatusDisabled {
			return nil, false
		}
		return d.PrimaryKey, true
	}
}
