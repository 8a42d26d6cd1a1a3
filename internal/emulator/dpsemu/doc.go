// Package dpsemu emulates the Azure IoT Hub Device Provisioning Service for
// TPM attestation over HTTPS, as strictly as the real service checks what
// the Azure SDKs send (docs/dps-protocol.md):
//
//   - the device API: the 401 challenge carrying an activation blob, SAS
//     verification with the challenge key, operations that stay "assigning"
//     for a while, and the assignment carrying the hub device key wrapped
//     for the TPM;
//   - the service API for individual TPM enrollments, with ETags and the
//     provisioningserviceowner policy, bulk operations, paged queries and
//     DPS's rate limit of 1,000 operations a minute;
//   - allocation over linked hubs (hashed, static, geoLatency), a device
//     registry shared with the IoT Hub emulator, persistence of its state,
//     and faults injected at run time on either API (throttling, 503s,
//     connection resets).
//
// A Server is an http.Handler; serve it over TLS with a certificate from
// internal/emulator/pki. It is safe for concurrent use.
package dpsemu
