// Package childenv builds the environment of every program edge-provisioner
// runs (iotedge or aziotctl config apply, systemd-run): its own, without the
// TPM hierarchy passwords it may have been given as EDGE_TPM_*_AUTH and
// without a hub device's key or connection string (EDGE_HUB_DEVICE_KEY,
// EDGE_HUB_CONNECTION_STRING, read by 'identity set'). A child
// has no use for them, and would pass them on to everything it starts in
// turn, or show them in /proc/PID/environ to whoever may read it.
package childenv

import (
	"os"
	"strings"
)

// Environ returns the process's environment as a child must get it: see
// Filter.
func Environ() []string { return Filter(os.Environ()) }

// Filter returns env, a list of KEY=VALUE, without the variables that hold
// hierarchy passwords, EDGE_TPM_*_AUTH (EDGE_TPM_ENDORSEMENT_AUTH,
// EDGE_TPM_OWNER_AUTH, and any later one), and the hub device secrets
// EnvDeviceKey and EnvConnectionString.
func Filter(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !isSecret(kv) {
			out = append(out, kv)
		}
	}
	return out
}

// The variables 'edge-provisioner identity set' reads a hub device's
// secret from.
const (
	EnvDeviceKey        = "EDGE_HUB_DEVICE_KEY"
	EnvConnectionString = "EDGE_HUB_CONNECTION_STRING"
)

func isSecret(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	return strings.HasPrefix(k, "EDGE_TPM_") && strings.HasSuffix(k, "_AUTH") || k == EnvDeviceKey || k == EnvConnectionString
}
