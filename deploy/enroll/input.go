package enroll

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxInput is the largest identity file Read takes: 10,000 identities with
// EK certificates and chains fill about 30 MB.
const MaxInput = 256 << 20

// Record is one identity to enroll, as read: what 'edge-provisioner
// identity --json' prints, plus the enrollment settings a file may give per
// device. Values are kept as written; Enroll decodes and checks them, so
// that one bad record is refused alone.
type Record struct {
	// Line is where the record starts in the file, from 1.
	Line int `json:"-"`

	RegistrationID string `json:"registrationId"`
	// EndorsementKey is the base64 TPM2B_PUBLIC of the RSA EK.
	EndorsementKey string `json:"endorsementKey"`
	// StorageRootKey is accepted and not enrolled: DPS gets it from the
	// device when it registers.
	StorageRootKey string `json:"storageRootKey,omitempty"`
	// Certificate is the RSA EK certificate, PEM or base64 DER; ECC is
	// the ECC EK's, which does not certify the RSA EK that DPS uses and is
	// therefore not checked; Chain holds the intermediates the TPM stores.
	Certificate string   `json:"endorsementKeyCertificate,omitempty"`
	ECC         string   `json:"eccEndorsementKeyCertificate,omitempty"`
	Chain       []string `json:"endorsementKeyCertificateChain,omitempty"`

	// Settings of this device's enrollment; empty ones take Settings'.
	DeviceID           string                     `json:"deviceId,omitempty"`
	IoTEdge            *bool                      `json:"iotEdge,omitempty"`
	IoTHubs            []string                   `json:"iotHubs,omitempty"`
	AllocationPolicy   string                     `json:"allocationPolicy,omitempty"`
	ProvisioningStatus string                     `json:"provisioningStatus,omitempty"`
	Reprovision        string                     `json:"reprovision,omitempty"`
	Tags               map[string]json.RawMessage `json:"tags,omitempty"`
	Desired            map[string]json.RawMessage `json:"desiredProperties,omitempty"`
}

// Read reads identities: JSON values one after the other (JSON lines, or
// the indented output of one 'edge-provisioner identity --json'), or CSV
// with a header row naming the columns (see Columns). The format is told
// by the first character. An unknown field or column, a JSON or CSV syntax
// error, or a record without a registration ID or EK is an error naming
// its line: a file that is not what it should be is not half-enrolled.
func Read(r io.Reader) ([]Record, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxInput {
		return nil, fmt.Errorf("identity file over %d MB", MaxInput>>20)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a BOM from spreadsheet exports
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("no identities")
	}
	var recs []Record
	if trimmed[0] == '{' {
		recs, err = readJSON(data, true)
	} else {
		recs, err = readCSV(data, true)
	}
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, errors.New("no identities")
	}
	return recs, nil
}

// ReadIDs reads the registration IDs of show, disable and delete: a file
// as Read takes it, from which only registrationId is needed (an identity
// file the devices were enrolled from, or a CSV with a registrationId
// column), or a list of registration IDs, one a line. Blank lines are
// skipped; a line of the list with a comma, or a record without a
// registration ID, is an error naming its line.
func ReadIDs(r io.Reader) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxInput {
		return nil, fmt.Errorf("registration ID file over %d MB", MaxInput>>20)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	var ids []string
	switch first, _, _ := bytes.Cut(trimmed, []byte("\n")); {
	case len(trimmed) == 0:
	case trimmed[0] == '{' || bytes.Contains(first, []byte("registrationId")):
		read := readCSV
		if trimmed[0] == '{' {
			read = readJSON
		}
		recs, err := read(data, false)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			ids = append(ids, rec.RegistrationID)
		}
	default:
		for i, line := range strings.Split(string(data), "\n") {
			id := strings.TrimSpace(line)
			if strings.ContainsAny(id, ",;\t\"") {
				return nil, fmt.Errorf("line %d: %q is not a registration ID: give one a line, or a CSV with a registrationId column", i+1, clip(id))
			}
			if id != "" {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return nil, errors.New("no registration IDs")
	}
	return ids, nil
}

// readJSON reads records; withEK requires an endorsementKey in each.
func readJSON(data []byte, withEK bool) ([]Record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var recs []Record
	for {
		start := dec.InputOffset()
		// The value starts after the whitespace that InputOffset counts.
		for int(start) < len(data) && strings.IndexByte(" \t\r\n", data[start]) >= 0 {
			start++
		}
		var rec Record
		err := dec.Decode(&rec)
		if err == io.EOF {
			return recs, nil
		}
		line := 1 + bytes.Count(data[:start], []byte("\n"))
		if err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				line = 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
			}
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		rec.Line = line
		if err := rec.check(withEK); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		recs = append(recs, rec)
	}
}

func (r *Record) check(withEK bool) error {
	switch {
	case withEK && (r.RegistrationID == "" || r.EndorsementKey == ""):
		return errors.New("no registrationId and endorsementKey: give the output of 'edge-provisioner identity --json'")
	case r.RegistrationID == "":
		return errors.New("no registrationId")
	}
	return nil
}

// Columns are the CSV columns Read knows. registrationId and
// endorsementKey are required; a "tag.NAME" column sets the string tag
// NAME; iotHubs lists host names separated by spaces or semicolons; a
// certificate column holds PEM or base64 DER, the chain column PEM
// certificates one after the other; tags and desiredProperties hold JSON
// objects.
var Columns = []string{
	"registrationId", "endorsementKey", "storageRootKey",
	"endorsementKeyCertificate", "eccEndorsementKeyCertificate", "endorsementKeyCertificateChain",
	"deviceId", "iotEdge", "iotHubs", "allocationPolicy", "provisioningStatus", "reprovision",
	"tags", "desiredProperties",
}

const tagColumn = "tag."

// readCSV reads records; withEK requires an endorsementKey column and
// value.
func readCSV(data []byte, withEK bool) ([]Record, error) {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		known := strings.HasPrefix(h, tagColumn) && len(h) > len(tagColumn)
		for _, c := range Columns {
			known = known || h == c
		}
		if !known {
			return nil, fmt.Errorf("CSV header: unknown column %q (known: %s, tag.NAME)", clip(h), strings.Join(Columns, ", "))
		}
		if seen[h] {
			return nil, fmt.Errorf("CSV header: column %q twice", h)
		}
		seen[h] = true
	}
	switch {
	case withEK && (!seen["registrationId"] || !seen["endorsementKey"]):
		return nil, errors.New("CSV header: want at least the columns registrationId and endorsementKey")
	case !seen["registrationId"]:
		return nil, errors.New("CSV header: want a registrationId column")
	}
	var recs []Record
	for {
		line, _ := cr.FieldPos(0)
		row, err := cr.Read()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			return nil, err // csv.ParseError names the line
		}
		line, _ = cr.FieldPos(0)
		rec := Record{Line: line}
		for i, v := range row {
			if err := rec.set(header[i], strings.TrimSpace(v)); err != nil {
				return nil, fmt.Errorf("line %d: column %s: %w", line, header[i], err)
			}
		}
		if err := rec.check(withEK); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		recs = append(recs, rec)
	}
}

// set sets the field of CSV column col; an empty cell sets nothing.
func (r *Record) set(col, v string) error {
	if v == "" {
		return nil
	}
	switch col {
	case "registrationId":
		r.RegistrationID = v
	case "endorsementKey":
		r.EndorsementKey = v
	case "storageRootKey":
		r.StorageRootKey = v
	case "endorsementKeyCertificate":
		r.Certificate = v
	case "eccEndorsementKeyCertificate":
		r.ECC = v
	case "endorsementKeyCertificateChain":
		r.Chain = []string{v}
	case "deviceId":
		r.DeviceID = v
	case "iotEdge":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", clip(v))
		}
		r.IoTEdge = &b
	case "iotHubs":
		r.IoTHubs = strings.FieldsFunc(v, func(c rune) bool { return c == ' ' || c == ';' || c == ',' })
	case "allocationPolicy":
		r.AllocationPolicy = v
	case "provisioningStatus":
		r.ProvisioningStatus = v
	case "reprovision":
		r.Reprovision = v
	case "tags", "desiredProperties":
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(v), &m); err != nil || m == nil {
			return errors.New("not a JSON object")
		}
		if col == "tags" {
			r.Tags = mergeRaw(m, r.Tags)
		} else {
			r.Desired = m
		}
	default: // tag.NAME, checked against the header
		b, _ := json.Marshal(v)
		if r.Tags == nil {
			r.Tags = map[string]json.RawMessage{}
		}
		if _, ok := r.Tags[col[len(tagColumn):]]; !ok {
			r.Tags[col[len(tagColumn):]] = b
		}
	}
	return nil
}

// mergeRaw returns over with the keys of under it lacks.
func mergeRaw(over, under map[string]json.RawMessage) map[string]json.RawMessage {
	if over == nil && under == nil {
		return nil
	}
	m := make(map[string]json.RawMessage, len(over)+len(under))
	for k, v := range under {
		m[k] = v
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

func clip(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
