// Package azureclients proves that Azure's own DPS device clients register
// against the DPS emulator in internal/emulator/dpsemu without modification.
//
// It holds only tests. node_test.go installs the Node.js SDK
// (azure-iot-provisioning-device, azure-iot-provisioning-device-http and
// azure-iot-security-tpm, which drives the TPM through tss.js) at the exact
// versions in testdata/node/package-lock.json, points it at the reference
// TPM simulator served over the mssim protocol (internal/emulator/tpmsim), and runs
// the whole TPM attestation flow of docs/dps-protocol.md#the-flow against the emulator.
package azureclients
