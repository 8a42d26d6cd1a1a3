package manifest

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/module/twin"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/pelletier/go-toml/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

const manifests = "../../manifests"

// templates are the deployment templates in manifests/.
var templates = []string{"deployment.base.json", "deployment.relay.layered.json"}

// configs are the config.toml examples in manifests/.
var configs = []string{"config.dps-tpm.toml", "config.dps-tpm-hierarchy-auth.toml"}

// Every file in manifests/ is loaded by a test: here, provisioner.toml by
// provisioner's, rollout.example.toml by edge-deploy's, relay.toml by
// deploy/debpkg's.
func TestManifestsCovered(t *testing.T) {
	entries, err := os.ReadDir(manifests)
	if err != nil {
		t.Fatal(err)
	}
	known := slices.Concat(templates, configs, []string{"values.example.toml", "provisioner.toml", "rollout.example.toml", "relay.toml"})
	for _, e := range entries {
		if !slices.Contains(known, e.Name()) {
			t.Errorf("manifests/%s is loaded by no test", e.Name())
		}
	}
}

func exampleValues(t *testing.T) Values {
	t.Helper()
	vals, err := LoadValues(filepath.Join(manifests, "values.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func render(t *testing.T, name string, vals Values) []byte {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join(manifests, name))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(tmpl, vals)
	if err != nil {
		t.Fatalf("Render(%s) = %v", name, err)
	}
	return out
}

func TestGolden(t *testing.T) {
	vals := exampleValues(t)
	for _, name := range templates {
		t.Run(name, func(t *testing.T) {
			got := render(t, name, vals)
			golden := filepath.Join("testdata", strings.TrimSuffix(name, ".json")+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render(%s) differs from %s (go test -update rewrites it):\n%s", name, golden, got)
			}
		})
	}
}

// desiredOf returns the relay's desired properties of a deployment, with
// a layered deployment's dot paths merged over base.
func desiredOf(t *testing.T, doc []byte, base map[string]any) map[string]any {
	t.Helper()
	var d struct {
		ModulesContent map[string]map[string]any `json:"modulesContent"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range d.ModulesContent["relay"] {
		if k == "properties.desired" {
			out = v.(map[string]any)
		} else if key, ok := strings.CutPrefix(k, "properties.desired."); ok {
			out[key] = v
		}
	}
	return out
}

// The relay accepts the desired properties both deployments give it.
func TestRelayDesired(t *testing.T) {
	vals := exampleValues(t)
	base := desiredOf(t, render(t, "deployment.base.json", vals), nil)
	layered := desiredOf(t, render(t, "deployment.relay.layered.json", vals), base)
	for name, d := range map[string]map[string]any{"base": base, "base+layered": layered} {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		c, err := twin.Parse(b)
		if err != nil {
			t.Errorf("%s: twin.Parse(%s) = %v", name, b, err)
			continue
		}
		if len(c.Sources) != 1 || c.Sources[0].Name != "press" || len(c.Sources[0].Topics) != 1 {
			t.Errorf("%s: sources = %+v, want press with one topic", name, c.Sources)
		}
	}
}

// The base deployment carries what the relay needs from the host and
// edgeHub.
func TestBaseDeployment(t *testing.T) {
	out := render(t, "deployment.base.json", exampleValues(t))
	var d struct {
		ModulesContent struct {
			Agent struct {
				Desired struct {
					Modules map[string]struct {
						Env      map[string]struct{ Value any } `json:"env"`
						Settings map[string]string              `json:"settings"`
					} `json:"modules"`
				} `json:"properties.desired"`
			} `json:"$edgeAgent"`
			Hub struct {
				Desired struct {
					Routes map[string]string `json:"routes"`
				} `json:"properties.desired"`
			} `json:"$edgeHub"`
		} `json:"modulesContent"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatal(err)
	}
	relay := d.ModulesContent.Agent.Desired.Modules["relay"]
	var opts struct {
		ExposedPorts map[string]any
		HostConfig   struct{ Binds []string }
	}
	if err := json.Unmarshal([]byte(relay.Settings["createOptions"]), &opts); err != nil {
		t.Fatalf("relay createOptions %q: %v", relay.Settings["createOptions"], err)
	}
	if !slices.Contains(opts.HostConfig.Binds, "/var/lib/edge-relay:/data") {
		t.Errorf("relay binds = %q, want /var/lib/edge-relay:/data", opts.HostConfig.Binds)
	}
	if _, ok := opts.ExposedPorts["9600/tcp"]; !ok {
		t.Errorf("relay exposed ports = %v, want 9600/tcp", opts.ExposedPorts)
	}
	if v := relay.Env["EDGE_RELAY_DATA"].Value; v != "/data" {
		t.Errorf("relay EDGE_RELAY_DATA = %v, want /data", v)
	}
	routes := d.ModulesContent.Hub.Desired.Routes
	want := map[string]Route{
		"sensorsToRelay":  {Source: "/messages/modules/plcreader/outputs/*", Sink: `BrokeredEndpoint("/modules/relay/inputs/readings")`},
		"relayToUpstream": {Source: "/messages/modules/relay/outputs/*", Sink: "$upstream"},
	}
	for name, w := range want {
		r, err := ParseRoute(routes[name])
		if err != nil || r != w {
			t.Errorf("route %s: ParseRoute(%q) = %+v, %v, want %+v", name, routes[name], r, err, w)
		}
	}
}

// Pinned by digests, every image of the base deployment carries one.
func TestPinnedImages(t *testing.T) {
	vals := exampleValues(t)
	digests := map[string]any{}
	for i, ref := range []string{"ghcr.io/edgetpm/edge-relay:0.1.0", "mcr.microsoft.com/azureiotedge-agent:1.5", "mcr.microsoft.com/azureiotedge-hub:1.5"} {
		digests[ref] = "sha256:" + strings.Repeat(string(rune('a'+i)), 64)
	}
	vals["digests"] = digests
	out := string(render(t, "deployment.base.json", vals))
	for ref, d := range digests {
		if !strings.Contains(out, `"image": "`+ref+"@"+d.(string)+`"`) {
			t.Errorf("rendered deployment does not pin %s to %s:\n%s", ref, d, out)
		}
	}
}

func TestConfigExamples(t *testing.T) {
	for _, name := range configs {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(manifests, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := edgeconfig.Validate(b); err != nil {
				t.Errorf("edgeconfig.Validate(%s) = %v", name, err)
			}
			// edgeconfig accepts every provisioning; these examples are DPS with TPM.
			var c struct {
				Provisioning struct {
					Source      string
					Attestation struct{ Method string }
				}
				TPM struct {
					AuthKeyIndex any `toml:"auth_key_index"`
				} `toml:"tpm"`
				Agent map[string]any
			}
			if err := toml.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if c.Provisioning.Source != "dps" || c.Provisioning.Attestation.Method != "tpm" {
				t.Errorf("provisioning = %q with %q, want dps with tpm", c.Provisioning.Source, c.Provisioning.Attestation.Method)
			}
			if _, ok := c.TPM.AuthKeyIndex.(int64); !ok {
				t.Errorf("tpm.auth_key_index = %#v, want a TOML integer", c.TPM.AuthKeyIndex)
			}
			if c.Agent == nil {
				t.Error("[agent] missing: these examples pin the agent image")
			}
		})
	}
}
