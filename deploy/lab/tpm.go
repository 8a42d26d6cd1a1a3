package lab

import (
	"context"
	"fmt"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/edgetpm/edgetpm/internal/mssim"
)

// serveSimulator serves a reference TPM (Microsoft's simulator, in this
// process) whose seeds derive from seed, so that its endorsement key and
// registration ID stay the same from one lab to the next, over the mssim
// protocol on two adjacent loopback ports,
// command port P and platform port P+1, so that the provisioner and the
// runtime stand-in reach it as they would swtpm. It returns the TPM's URI
// and a function that stops it.
func serveSimulator(seed int64) (uri string, stop func() error, err error) {
	cmdL, platL, err := mssim.Listen("127.0.0.1")
	if err != nil {
		return "", nil, fmt.Errorf("tpm: %w", err)
	}
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		cmdL.Close()
		platL.Close()
		return "", nil, fmt.Errorf("tpm: start the reference simulator: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mssim.New(sim).Serve(ctx, cmdL, platL) }()
	stop = func() error {
		cancel()
		err := <-done
		if cerr := sim.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return "mssim://" + cmdL.Addr().String(), stop, nil
}
