package main

import "testing"

// The sources read only variables meant for their passwords, whatever
// configuration reaches them.
func TestSourcePasswords(t *testing.T) {
	environ := map[string]string{
		"EdgeHubConnectionString": "HostName=h;DeviceId=d;SharedAccessKey=k", "IOTEDGE_WORKLOADURI": "unix:///w.sock",
		"EDGE_RELAY_CONFIG": "/etc/relay.toml", "EDGE_TPM_OWNER_AUTH": "owner", "PRESS_PASSWORD": "pw",
	}
	get := sourcePasswords(func(k string) string { return environ[k] })
	for name, want := range map[string]string{
		"EdgeHubConnectionString": "", "IOTEDGE_WORKLOADURI": "", "EDGE_RELAY_CONFIG": "", "EDGE_TPM_OWNER_AUTH": "", "PRESS_PASSWORD": "pw",
	} {
		if got := get(name); got != want {
			t.Errorf("sourcePasswords(%s) = %q, want %q", name, got, want)
		}
	}
}
