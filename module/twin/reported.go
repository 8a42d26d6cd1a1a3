package twin

// Status is the outcome of a desired version.
type Status string

// The statuses of a Reported.
const (
	StatusApplied  Status = "applied"
	StatusRejected Status = "rejected"
)

// Reported is the Reconciler's report of a desired version: the
// "configuration" member of the module twin's reported properties. The
// reconciler writes it; whoever reads the twin back (the lab, an
// operator's tooling) decodes the same type.
type Reported struct {
	// Version is the desired $version last applied or rejected.
	Version int64  `json:"version"`
	Status  Status `json:"status"`
	// Reason says why Version was rejected; empty when applied.
	Reason string `json:"reason,omitempty"`
	// Effective is the configuration in effect, from AppliedVersion (0:
	// the defaults).
	Effective      Config `json:"effective"`
	AppliedVersion int64  `json:"appliedVersion"`
	// Counters are the module's counters when Reconciler.Counters is set;
	// read back from JSON, they are a map[string]any.
	Counters any `json:"counters,omitempty"`
}

// ReportedProperties is what the Reconciler writes of the reported
// properties: each of its patches is one, and a reader of the twin decodes
// properties.reported into one (other members, such as the relay's
// summary, are ignored).
type ReportedProperties struct {
	Configuration *Reported `json:"configuration,omitempty"`
}
