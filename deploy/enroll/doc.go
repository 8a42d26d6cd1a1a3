// Package enroll creates and keeps the individual TPM enrollments of a
// fleet in DPS, which has no enrollment groups for TPM attestation: every
// device needs its own. It reads the identities collected on a factory line
// ('edge-provisioner identity --json' outputs, or CSV), checks each EK
// certificate up to a manufacturer root, builds the enrollment each device
// should have, compares it with what DPS holds, and sends only the
// differences through DPS's bulk operation, within DPS's operations budget.
// A second run with the same input changes nothing, and an update changes
// only what the run asks for: what DPS holds otherwise (a status set since,
// fields this package does not model) stays.
//
// Enroll, Show, Disable and Delete are safe for concurrent use as far as
// the service they are given is.
package enroll
