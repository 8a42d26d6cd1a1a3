// Package edgeconfig manages Azure IoT Edge's host configuration,
// /etc/aziot/config.toml (docs/edge-protocol.md#host-provisioning-file): it sets DPS
// provisioning with TPM attestation, validates the file against the rules
// aziot's services apply when they read it, writes it atomically with a
// backup, and runs "iotedge config apply".
//
// Operators edit config.toml by hand, starting from a template that is
// mostly comments, so a Document is edited as text: the keys this package
// owns ([provisioning], [tpm], and hostname and auto_reprovisioning_mode when
// set) are replaced in place, inserted or removed, and every other byte of
// the file, comments and layout included, stays as it was.
package edgeconfig
