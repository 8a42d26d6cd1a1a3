package edgeconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/edgetpm/edgetpm/provisioner/childenv"
)

// ErrNoApplyTool is Apply finding neither iotedge nor aziotctl.
var ErrNoApplyTool = errors.New("neither iotedge nor aziotctl is on PATH; is IoT Edge installed?")

// Apply runs "iotedge config apply -c path", or, where only the identity
// service is installed, "aziotctl config apply -c path"
// (docs/edge-protocol.md#host-provisioning-file), with the tool's output and errors streamed to out. It returns the
// tool it ran. Both tools must run as root; they restart aziot's services.
// They run without the hierarchy passwords of the environment (childenv).
func Apply(ctx context.Context, path string, out io.Writer) (tool string, err error) {
	tool, argv, err := ApplyCommand(path)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = childenv.Environ()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return tool, fmt.Errorf("%s config apply -c %s: %w", tool, path, err)
	}
	return tool, nil
}

// ApplyCommand is the command line Apply runs, for callers that must run
// it some other way (queued as a systemd unit, say): the tool's name and
// its argv, the binary's full path first.
func ApplyCommand(path string) (tool string, argv []string, err error) {
	for _, tool := range []string{"iotedge", "aziotctl"} {
		if bin, err := exec.LookPath(tool); err == nil {
			return tool, []string{bin, "config", "apply", "-c", path}, nil
		}
	}
	return "", nil, ErrNoApplyTool
}
