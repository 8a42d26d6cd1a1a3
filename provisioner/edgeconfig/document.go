package edgeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Document is a config.toml being edited. It keeps the file's bytes, so
// that comments and layout survive; it is not safe for concurrent use.
type Document struct {
	data   []byte
	exists bool
	tree   map[string]any // data as go-toml decodes it
}

// Parse reads the content of a config.toml. Its errors are *ParseError.
func Parse(data []byte) (*Document, error) {
	data = slices.Clone(data)
	tree, err := decode(data)
	if err != nil {
		return nil, err
	}
	return &Document{data: data, exists: true, tree: tree}, nil
}

// Load reads the config.toml at path. A missing file gives an empty
// Document whose Exists is false; a file that does not parse gives a
// *ParseError naming path.
func Load(path string) (*Document, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Document{tree: map[string]any{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load IoT Edge config: %w", err)
	}
	d, err := Parse(data)
	var pe *ParseError
	if errors.As(err, &pe) {
		pe.Path = path
	}
	return d, err
}

// Exists reports whether the Document was read from a file.
func (d *Document) Exists() bool { return d.exists }

// Bytes returns the Document's content. The caller must not modify it.
func (d *Document) Bytes() []byte { return d.data }

// Source returns [provisioning] source, or "" when there is none.
func (d *Document) Source() string {
	s, _ := lookup(d.tree, "provisioning", "source").(string)
	return s
}

// Provisioning is what config.toml says about how the device provisions,
// for a status report.
type Provisioning struct {
	Source         string  `json:"source"`
	GlobalEndpoint string  `json:"globalEndpoint,omitempty"`
	IDScope        string  `json:"idScope,omitempty"`
	Method         string  `json:"method,omitempty"`
	RegistrationID string  `json:"registrationId,omitempty"`
	TCTI           string  `json:"tcti,omitempty"`
	Hostname       string  `json:"hostname,omitempty"`
	AuthKeyIndex   *uint32 `json:"authKeyIndex,omitempty"`
}

// Provisioning summarizes the Document's provisioning settings. Values of
// the wrong type read as absent.
func (d *Document) Provisioning() Provisioning {
	str := func(path ...string) string {
		s, _ := lookup(d.tree, path...).(string)
		return s
	}
	p := Provisioning{
		Source:         d.Source(),
		GlobalEndpoint: str("provisioning", "global_endpoint"),
		IDScope:        str("provisioning", "id_scope"),
		Method:         str("provisioning", "attestation", "method"),
		RegistrationID: str("provisioning", "attestation", "registration_id"),
		TCTI:           str("tpm", "tcti"),
		Hostname:       str("hostname"),
	}
	if n, ok := lookup(d.tree, "tpm", "auth_key_index").(int64); ok && n >= 0 && n <= maxAuthKeyIndex {
		i := uint32(n)
		p.AuthKeyIndex = &i
	}
	return p
}

// SetDPS makes the Document provision by DPS with TPM attestation as s
// says. Keys under [provisioning] and [tpm] that s does not set are
// removed; everything else stays as it was. When the file provisions
// another way (manual, or DPS with another attestation), SetDPS returns a
// *SourceError unless force is set. On error the Document is unchanged.
func (d *Document) SetDPS(s DPS, force bool) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("set DPS provisioning: %w", err)
	}
	src := d.Source()
	method, _ := lookup(d.tree, "provisioning", "attestation", "method").(string)
	if !force && src != "" && src != "dps" {
		return &SourceError{Current: src}
	}
	if !force && src == "dps" && method != "" && method != "tpm" {
		return &SourceError{Current: src, Method: method}
	}
	data, err := setDPS(d.data, s)
	if err != nil {
		return fmt.Errorf("set DPS provisioning: %w", err)
	}
	// A layout the editor misreads must not be written as a config that
	// does not parse or provisions some other way.
	tree, err := decode(data)
	if err != nil {
		return fmt.Errorf("set DPS provisioning: bug: the edited file does not parse: %w", err)
	}
	for k, v := range s.want() {
		if !reflect.DeepEqual(tree[k], v) {
			return fmt.Errorf("set DPS provisioning: bug: the edited file reads back a different %s", k)
		}
	}
	if err := validateTree(tree); err != nil {
		return fmt.Errorf("set DPS provisioning: %w", err)
	}
	d.data, d.tree = data, tree
	return nil
}

// ParseError is config.toml content that is not valid TOML.
type ParseError struct {
	Path         string // "" when the content did not come from a file
	Line, Column int    // 1-based; 0 when unknown
	Msg          string
}

func (e *ParseError) Error() string {
	switch {
	case e.Line == 0 && e.Path == "":
		return e.Msg
	case e.Line == 0:
		return e.Path + ": " + e.Msg
	case e.Path == "":
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.Path, e.Line, e.Column, e.Msg)
}

// SourceError is SetDPS refusing to replace another way of provisioning.
type SourceError struct {
	Current string // [provisioning] source
	Method  string // [provisioning.attestation] method, when Current is "dps"
}

func (e *SourceError) Error() string {
	by := fmt.Sprintf("%q", e.Current)
	if e.Method != "" {
		by += fmt.Sprintf(" with %q attestation", e.Method)
	}
	return "config.toml provisions by " + by + "; refusing to replace it with DPS TPM attestation (use --force)"
}

// decode reads data as go-toml does, which also rejects what its parser
// alone accepts, such as a key defined twice. Its errors are *ParseError.
func decode(data []byte) (map[string]any, error) {
	tree := map[string]any{}
	err := toml.Unmarshal(data, &tree)
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return nil, &ParseError{Line: line, Column: col, Msg: strings.TrimPrefix(de.Error(), "toml: ")}
	}
	if err != nil {
		return nil, &ParseError{Msg: err.Error()}
	}
	return tree, nil
}

// lookup returns the value at path in tree, or nil.
func lookup(tree map[string]any, path ...string) any {
	var v any = tree
	for _, k := range path {
		t, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = t[k]
	}
	return v
}
