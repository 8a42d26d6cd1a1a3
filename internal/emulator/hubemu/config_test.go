package hubemu

import "testing"

// The hub's name goes into the service connection string, which
// sas.ParsePolicy reads back only with a DNS name in it; New refuses any
// other.
func TestNewRefusesHubNotDNS(t *testing.T) {
	for _, hub := range []string{"lab_hub.azure-devices.net", "x\n1.2.3.4\vexample.com", "h#x", "-h.net", "h:443"} {
		if _, err := New(Config{HubHostName: hub, Key: noKey}); err == nil {
			t.Errorf("New(HubHostName %q) succeeded, want an error", hub)
		}
	}
	if _, err := New(Config{HubHostName: "Other-Hub.azure-devices.net", Key: noKey}); err != nil {
		t.Errorf("New(HubHostName Other-Hub.azure-devices.net) = %v", err)
	}
}

func noKey(string, string) ([]byte, bool) { return nil, false }
