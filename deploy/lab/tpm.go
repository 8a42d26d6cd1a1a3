package lab

import (
	"fmt"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/edgetpm/edgetpm/internal/emulator/tpmsim"
)

// serveSimulator serves a reference TPM (Microsoft's simulator, in this
// process) whose seeds derive from seed, so that its endorsement key and
// registration ID stay the same from one lab to the next, over the mssim
// protocol on two adjacent loopback ports, so that the provisioner and the
// runtime stand-in reach it as they would swtpm. It returns the TPM's URI
// and a function that stops it.
func serveSimulator(seed int64) (uri string, stop func() error, err error) {
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return "", nil, fmt.Errorf("tpm: start the reference simulator: %w", err)
	}
	s, err := tpmsim.Start(sim)
	if err != nil {
		return "", nil, fmt.Errorf("tpm: %w", err)
	}
	return s.URI, s.Close, nil
}
