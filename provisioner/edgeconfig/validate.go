package edgeconfig

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// Problem is one way a config.toml breaks the rules aziot's services and
// iotedge apply when they read it.
type Problem struct {
	Key string // dotted key path, e.g. "tpm.auth_key_index"
	Msg string
}

// ValidationError lists every Problem of a config.toml, sorted by key.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Key + ": " + p.Msg)
	}
	return b.String()
}

// Validate checks the content of a config.toml against the schema of
// docs/edge-protocol.md#host-provisioning-file. It returns a *ParseError when data is not TOML and
// a *ValidationError listing every problem otherwise.
func Validate(data []byte) error {
	tree, err := decode(data)
	if err != nil {
		return err
	}
	return validateTree(tree)
}

func validateTree(t map[string]any) error {
	var c checker
	for _, k := range []string{"hostname", "parent_hostname", "local_gateway_hostname", "trust_bundle_cert"} {
		c.str(t, "", k, false)
	}
	for _, k := range []string{"allow_elevated_docker_permissions", "prefer_module_identity_cache"} {
		if v, ok := t[k]; ok {
			if _, isBool := v.(bool); !isBool {
				c.add(k, "must be true or false")
			}
		}
	}
	c.enum(t, "", "auto_reprovisioning_mode", false, reprovisioningModes...)
	// aziot-identityd rejects timeouts under its default of 70 s.
	c.integer(t, "", "cloud_timeout_sec", 70, math.MaxInt64, "an integer of at least 70 (seconds)")
	c.integer(t, "", "cloud_retries", 0, math.MaxUint32, "a non-negative integer")
	c.provisioning(t)
	c.tpm(t)
	c.agent(t)
	if w := c.table(t, "", "watchdog", false); w != nil {
		if v, ok := w["max_retries"]; ok && v != "infinite" {
			if n, isInt := v.(int64); !isInt || n < 1 {
				c.add("watchdog.max_retries", `must be "infinite" or a positive integer`)
			}
		}
	}
	if len(c.problems) == 0 {
		return nil
	}
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Key < c.problems[j].Key })
	return &ValidationError{Problems: c.problems}
}

func (c *checker) provisioning(t map[string]any) {
	p := c.table(t, "", "provisioning", false)
	if p == nil {
		if _, ok := t["provisioning"]; !ok {
			c.add("provisioning.source", "required")
		}
		return
	}
	switch c.enum(p, "provisioning", "source", true, "manual", "dps", "none") {
	case "manual":
		if _, ok := p["connection_string"]; ok {
			c.str(p, "provisioning", "connection_string", true)
		} else {
			c.str(p, "provisioning", "iothub_hostname", true)
			c.str(p, "provisioning", "device_id", true)
		}
	case "dps":
		c.str(p, "provisioning", "id_scope", true)
		if ep, ok := c.str(p, "provisioning", "global_endpoint", false); ok {
			if err := dps.CheckEndpoint(ep); err != nil {
				c.add("provisioning.global_endpoint", err.Error())
			}
		}
		if pl := c.table(p, "provisioning", "payload", false); pl != nil {
			if uri, ok := c.str(pl, "provisioning.payload", "uri", true); ok && !strings.HasPrefix(uri, "file://") {
				c.add("provisioning.payload.uri", "must be a file:// URI")
			}
		}
		a := c.table(p, "provisioning", "attestation", true)
		if a != nil && c.enum(a, "provisioning.attestation", "method", true, "tpm", "symmetric_key", "x509") == "tpm" {
			c.str(a, "provisioning.attestation", "registration_id", true)
		}
	}
}

func (c *checker) tpm(t map[string]any) {
	tp := c.table(t, "", "tpm", false)
	if tp == nil {
		return
	}
	c.str(tp, "tpm", "tcti", false)
	if s, ok := tp["auth_key_index"].(string); ok {
		// The shipped template quotes it, but aziot-tpmd reads a u32.
		msg := "must be a TOML integer, not a string"
		if _, err := strconv.ParseInt(s, 0, 64); err == nil {
			msg += "; write auth_key_index = " + s
		}
		c.add("tpm.auth_key_index", msg)
	} else {
		c.integer(tp, "tpm", "auth_key_index", 0, maxAuthKeyIndex, "an integer from 0 to 0x7F_FF_FF")
	}
	if h := c.table(tp, "tpm", "hierarchy_authorization", false); h != nil {
		c.str(h, "tpm.hierarchy_authorization", "endorsement", false)
		c.str(h, "tpm.hierarchy_authorization", "owner", false)
	}
}

func (c *checker) agent(t map[string]any) {
	a := c.table(t, "", "agent", false)
	if a == nil {
		return
	}
	// iotedge takes a given [agent] whole: nothing falls back to defaults.
	c.str(a, "agent", "name", true)
	c.str(a, "agent", "type", true)
	c.enum(a, "agent", "imagePullPolicy", false, "on-create", "never")
	if cfg := c.table(a, "agent", "config", true); cfg != nil {
		c.str(cfg, "agent.config", "image", true)
	}
	if env := c.table(a, "agent", "env", false); env != nil {
		for k := range env {
			c.str(env, "agent.env", k, false)
		}
	}
}

// A checker collects problems.
type checker struct {
	problems []Problem
}

func (c *checker) add(key, msg string) {
	c.problems = append(c.problems, Problem{key, msg})
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// table returns the table m[name], or nil when it is absent or no table.
func (c *checker) table(m map[string]any, prefix, name string, required bool) map[string]any {
	v, ok := m[name]
	if !ok {
		if required {
			c.add(join(prefix, name), "required")
		}
		return nil
	}
	t, isTable := v.(map[string]any)
	if !isTable {
		c.add(join(prefix, name), "must be a table")
	}
	return t
}

// str returns the string m[name] and whether it is one. A required string
// must not be empty.
func (c *checker) str(m map[string]any, prefix, name string, required bool) (string, bool) {
	v, ok := m[name]
	if !ok {
		if required {
			c.add(join(prefix, name), "required")
		}
		return "", false
	}
	s, isStr := v.(string)
	switch {
	case !isStr:
		c.add(join(prefix, name), "must be a string")
	case required && s == "":
		c.add(join(prefix, name), "must not be empty")
	}
	return s, isStr
}

// enum returns the string m[name] when it is one of choices.
func (c *checker) enum(m map[string]any, prefix, name string, required bool, choices ...string) string {
	v, ok := m[name]
	if !ok {
		if required {
			c.add(join(prefix, name), "required")
		}
		return ""
	}
	s, isStr := v.(string)
	if isStr && oneOf(s, choices...) {
		return s
	}
	quoted := make([]string, len(choices))
	for i, ch := range choices {
		quoted[i] = strconv.Quote(ch)
	}
	list := strings.Join(quoted, ", ")
	if isStr {
		c.add(join(prefix, name), fmt.Sprintf("%q is not one of %s", s, list))
	} else {
		c.add(join(prefix, name), "must be one of "+list)
	}
	return ""
}

// integer checks that m[name], when present, is an integer in [lo, hi];
// want says so in words.
func (c *checker) integer(m map[string]any, prefix, name string, lo, hi int64, want string) {
	v, ok := m[name]
	if !ok {
		return
	}
	if n, isInt := v.(int64); !isInt || n < lo || n > hi {
		c.add(join(prefix, name), "must be "+want)
	}
}
