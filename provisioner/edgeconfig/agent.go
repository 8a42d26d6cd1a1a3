package edgeconfig

import (
	"bytes"
	"fmt"
)

// DefaultAgentImage is the edgeAgent of IoT Edge 1.5, the LTS release.
const DefaultAgentImage = "mcr.microsoft.com/azureiotedge-agent:1.5"

// EnsureAgent gives a Document without an [agent] table a complete one
// (docs/edge-protocol.md#host-provisioning-file): name, type, pull policy, the image, and its
// storage folder bound to the host so edgeAgent's backup of the deployment
// survives re-creating the container. An existing [agent] is left as it
// is. It reports whether it added one.
func (d *Document) EnsureAgent(image string) (added bool, err error) {
	if _, ok := d.tree["agent"]; ok {
		return false, nil
	}
	var b bytes.Buffer
	b.Write(d.data)
	if b.Len() > 0 {
		if !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, `[agent]
name = "edgeAgent"
type = "docker"
imagePullPolicy = "on-create"

[agent.config]
image = %s
createOptions = { HostConfig = { Binds = ["/iotedge/storage:/iotedge/storage"] } }

[agent.env]
storageFolder = "/iotedge/storage"
`, quote(image))
	tree, err := decode(b.Bytes())
	if err != nil {
		return false, fmt.Errorf("add [agent]: %w", err)
	}
	if err := validateTree(tree); err != nil {
		return false, fmt.Errorf("add [agent]: %w", err)
	}
	d.data, d.tree = b.Bytes(), tree
	return true, nil
}
