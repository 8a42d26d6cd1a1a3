package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/provisioner/containerd"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// runtimeRemedy is what to look at when edge modules do not run: the
// runtime's own view, edgeAgent's log (it creates every other module), and
// the cause DPS cannot show a device, an enrollment without the IoT Edge
// capability, which leaves aziot-edged unable to get edgeAgent's identity.
const runtimeRemedy = "next: 'sudo iotedge system status', 'sudo iotedge logs edgeAgent' and 'sudo iotedge system logs'; " +
	"if edgeAgent never starts and the logs show 401 for $edgeAgent's identity, the device is not an IoT Edge device in the hub: " +
	"its DPS enrollment must have 'IoT Edge device' set to True"

// statusReport is what status shows. A part that could not be read has
// its error instead; status itself still succeeds.
type statusReport struct {
	TPM struct {
		URI            string           `json:"uri"`
		RegistrationID string           `json:"registrationId,omitempty"`
		HubIdentity    *hubIdentityJSON `json:"hubIdentity,omitempty"`
		*tpm.Status
		Error string `json:"error,omitempty"`
	} `json:"tpm"`
	Assignment struct {
		Path string `json:"path"`
		*assignment.Assignment
		// Superseded: the TPM holds a hub identity, which token and
		// the relay use instead of this assignment.
		Superseded string `json:"superseded,omitempty"`
		Error      string `json:"error,omitempty"`
	} `json:"assignment"`
	Config struct {
		Path string `json:"path"`
		*edgeconfig.Provisioning
		Error string `json:"error,omitempty"`
	} `json:"config"`
	Runtime struct {
		Address    string                 `json:"address"`
		Namespace  string                 `json:"namespace"`
		Version    string                 `json:"version,omitempty"`
		Containers []containerd.Container `json:"containers"`
		Error      string                 `json:"error,omitempty"`
	} `json:"runtime"`
}

func runStatus(ctx context.Context, args []string, stdout, _ io.Writer, getenv env) error {
	fs := newFlagSet("status", "status [--tpm URI] [--aziot-config FILE] [--containerd-address PATH] [--json]")
	l := settings.NewLoader(fs, settings.TPMGroup|settings.AziotGroup|settings.ContainerdGroup|settings.StateGroup)
	asJSON := fs.Bool("json", false, "print JSON")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	var r statusReport

	r.TPM.URI = s.TPM.URI
	if t, err := openTPM(s); err != nil {
		r.TPM.Error = err.Error()
	} else {
		if r.TPM.Status, err = t.Status(ctx); err != nil {
			r.TPM.Error = err.Error()
		} else if r.TPM.Status.EndorsementKey && r.TPM.Status.StorageRootKey {
			// Both are persisted, so Identity only reads.
			if id, err := t.Identity(ctx); err == nil {
				r.TPM.RegistrationID = id.RegistrationID
			}
		}
		if r.TPM.Error == "" {
			if r.TPM.HubIdentity, err = readHubIdentity(ctx, t); err != nil {
				r.TPM.Error = err.Error()
			}
		}
		t.Close()
	}

	r.Assignment.Path = s.State
	if r.Assignment.Assignment, err = assignment.Load(s.State); err != nil {
		r.Assignment.Error = err.Error()
	}
	if h := r.TPM.HubIdentity; h != nil && r.Assignment.Assignment != nil {
		r.Assignment.Superseded = fmt.Sprintf("the TPM's hub identity, device %s at %s, signs instead", h.DeviceID, h.HostName)
	}

	r.Config.Path = s.Aziot.Config
	if doc, err := edgeconfig.Load(s.Aziot.Config); err != nil {
		r.Config.Error = err.Error()
	} else if !doc.Exists() {
		r.Config.Error = "no such file"
	} else {
		p := doc.Provisioning()
		r.Config.Provisioning = &p
	}

	r.Runtime.Address, r.Runtime.Namespace = s.Images.ContainerdAddress, s.Images.ContainerdNamespace
	s.Images.DockerSocket = "" // status only reads containers
	if c, err := newContainerd(ctx, s, zerolog.Nop()); err != nil {
		r.Runtime.Error = err.Error()
	} else {
		r.Runtime.Version, _ = c.Version(ctx)
		if r.Runtime.Containers, err = c.Containers(ctx); err != nil {
			r.Runtime.Error = err.Error()
		}
		c.Close()
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(stdout, &r)
	return nil
}

func printStatus(out io.Writer, r *statusReport) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(w, "TPM\t%s\n", r.TPM.URI)
	if r.TPM.Error != "" {
		fmt.Fprintf(w, "\terror: %s\n", r.TPM.Error)
	} else {
		fmt.Fprintf(w, "\tmanufacturer %s; EK persisted: %s; SRK persisted: %s; hub key at %#x: %s\n",
			r.TPM.Manufacturer, yes(r.TPM.EndorsementKey), yes(r.TPM.StorageRootKey), r.TPM.AuthKeyHandle, yes(r.TPM.AuthKey))
		if r.TPM.RegistrationID != "" {
			fmt.Fprintf(w, "\tregistration ID %s\n", r.TPM.RegistrationID)
		}
		if h := r.TPM.HubIdentity; h != nil {
			fmt.Fprintf(w, "\thub identity: device %s at %s, its key at %#x (identity set)\n", h.DeviceID, h.HostName, r.TPM.AuthKeyHandle)
		}
	}
	fmt.Fprintf(w, "Identity\t%s\n", r.Assignment.Path)
	if a := r.Assignment.Assignment; a != nil {
		fmt.Fprintf(w, "\tassigned to %s as %s (%s) at %s, ID scope %s\n", a.AssignedHub, a.DeviceID, a.Substatus, a.AssignedAt.Format("2006-01-02 15:04:05Z07:00"), a.IDScope)
		if r.Assignment.Superseded != "" {
			fmt.Fprintf(w, "\tsuperseded by the TPM's hub identity: device %s at %s signs instead\n", r.TPM.HubIdentity.DeviceID, r.TPM.HubIdentity.HostName)
		}
	} else {
		fmt.Fprintf(w, "\t%s\n", r.Assignment.Error)
	}
	fmt.Fprintf(w, "config.toml\t%s\n", r.Config.Path)
	if p := r.Config.Provisioning; p != nil {
		index := "default"
		if p.AuthKeyIndex != nil {
			index = fmt.Sprintf("%#x", *p.AuthKeyIndex)
		}
		fmt.Fprintf(w, "\tsource %q, attestation %q, ID scope %q, registration ID %q\n\ttcti %q, auth_key_index %s, hostname %q\n",
			p.Source, p.Method, p.IDScope, p.RegistrationID, p.TCTI, index, p.Hostname)
	} else {
		fmt.Fprintf(w, "\t%s\n", r.Config.Error)
	}
	fmt.Fprintf(w, "Runtime\tcontainerd %s at %s, namespace %s\n", r.Runtime.Version, r.Runtime.Address, r.Runtime.Namespace)
	if r.Runtime.Error != "" {
		fmt.Fprintf(w, "\terror: %s\n", r.Runtime.Error)
	}
	if r.Runtime.Error == "" && len(r.Runtime.Containers) == 0 {
		fmt.Fprintf(w, "\tno IoT Edge containers in namespace %s; %s\n", r.Runtime.Namespace, runtimeRemedy)
	}
	for _, c := range r.Runtime.Containers {
		fmt.Fprintf(w, "\t%s\t%s\tpid %d\t%s\n", c.Module, c.State, c.PID, c.Image)
	}
}
