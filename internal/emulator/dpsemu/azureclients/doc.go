// Package azureclients proves that Azure's own DPS clients work against the
// DPS emulator in internal/emulator/dpsemu without modification.
//
// It holds only tests. node_test.go installs the Node.js SDK
// (azure-iot-provisioning-device, azure-iot-provisioning-device-http and
// azure-iot-security-tpm, which drives the TPM through tss.js, and the
// service client azure-iot-provisioning-service) at the exact versions in
// testdata/node/package-lock.json, points it at the reference TPM simulator
// served over the mssim protocol (internal/emulator/tpmsim), and runs the
// whole TPM attestation flow of docs/dps-protocol.md#the-flow against the
// emulator. lab_test.go starts the lab's DPS as edge-deploy lab dps does,
// writes the lab's /etc/hosts lines, and has the service client enroll the
// TPM from the lab's service connection string file as written, reaching
// DPS at the string's host name on port 443.
package azureclients
