package dpsemu

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// Query paging (docs/dps-protocol.md#bulk-operations-and-queries).
const (
	headerMaxItemCount = "x-ms-max-item-count"
	headerContinuation = "x-ms-continuation"
	headerItemType     = "x-ms-item-type"
	// itemTypeEnrollment is x-ms-item-type on a page of individual
	// enrollments (the C# SDK's DpsQueryResultType, DpsQueryResultType.cs).
	itemTypeEnrollment = "enrollment"
	// [UNCONFIRMED] DPS's default and largest page sizes; a client that
	// follows x-ms-continuation works with any.
	defaultPageSize = 100
	maxPageSize     = 1000
)

// bulkUpdateIfMatchEtagNode is the Node.js SDK's spelling of
// dpsservice.BulkUpdateIfMatchETag.
const bulkUpdateIfMatchEtagNode = "updateIfMatchEtag"

// bulk serves POST /enrollments, a BulkEnrollmentOperation
// (docs/dps-protocol.md#bulk-operations-and-queries). A malformed
// operation is refused whole with 400; otherwise each enrollment is
// applied on its own, its failure reported in the 200 result's errors
// while the others stand (azure-iot-sdk-node
// provisioning/service/samples/run_bulk_operation.js).
func (s *Server) bulk(w http.ResponseWriter, r *http.Request) {
	if !s.serviceRequest(w, r, http.MethodPost) {
		return
	}
	var op dpsservice.BulkOperation
	if err := readBody(r, &op); err != nil {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	if msg := checkBulk(&op); msg != "" {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, msg)
		return
	}
	// Each enrollment is one operation against the rate limit
	// (docs/dps-protocol.md#throttling).
	if !s.admit(w, len(op.Enrollments)) {
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// errors is an array, empty when all succeeded, as Azure's Node.js SDK
	// describes BulkEnrollmentOperationResult (interfaces.d.ts, 1.11.2).
	res := dpsservice.BulkResult{IsSuccessful: true, Errors: []dpsservice.BulkError{}}
	changed := false
	for i := range op.Enrollments {
		e := &op.Enrollments[i]
		code, msg := s.applyBulk(op.Mode, e)
		if code != 0 {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, dpsservice.BulkError{RegistrationID: e.RegistrationID, ErrorCode: code, ErrorStatus: msg})
			continue
		}
		changed = true
	}
	if changed {
		if err := s.save(); err != nil {
			s.internalError(w, err)
			return
		}
	}
	s.log.Info().Str("mode", op.Mode).Int("enrollments", len(op.Enrollments)).Int("errors", len(res.Errors)).Msg("bulk enrollment operation")
	s.writeJSON(w, http.StatusOK, &res, "")
}

// checkBulk returns why op cannot run at all, "" when it can: its mode,
// its number of enrollments (1 to MaxBulk) and no registration ID twice
// (run_bulk_operation.js: a duplicate fails the whole request).
func checkBulk(op *dpsservice.BulkOperation) string {
	// Azure's REST API spec spells the mode updateIfMatchETag; Azure's
	// Node.js service client declares it updateIfMatchEtag
	// (BulkOperationMode, interfaces.d.ts, 1.11.2) and sends what its
	// caller gives. DPS takes both ([UNCONFIRMED]: what DPS does with
	// other spellings; the emulator refuses them).
	if op.Mode == bulkUpdateIfMatchEtagNode {
		op.Mode = dpsservice.BulkUpdateIfMatchETag
	}
	switch op.Mode {
	case dpsservice.BulkCreate, dpsservice.BulkUpdate, dpsservice.BulkUpdateIfMatchETag, dpsservice.BulkDelete:
	default:
		return fmt.Sprintf("mode %q, want create, update, updateIfMatchETag or delete.", clip(op.Mode))
	}
	if n := len(op.Enrollments); n == 0 || n > dpsservice.MaxBulk {
		return fmt.Sprintf("A bulk operation takes 1 to %d enrollments, not %d.", dpsservice.MaxBulk, n)
	}
	seen := make(map[string]bool, len(op.Enrollments))
	for _, e := range op.Enrollments {
		k := regKey(e.RegistrationID)
		if seen[k] {
			return fmt.Sprintf("Registration ID %q appears more than once.", clip(e.RegistrationID))
		}
		seen[k] = true
	}
	return ""
}

// applyBulk applies one enrollment of a bulk operation and returns 0 and
// "", or the errorCode and errorStatus of its failure. Writes are checked
// as a single PUT's are. The caller holds s.mu.
func (s *Server) applyBulk(mode string, e *dpsservice.Enrollment) (int, string) {
	if msg := validRegistrationID(e.RegistrationID); msg != "" {
		return codeBadRequest, msg
	}
	k := regKey(e.RegistrationID)
	old := s.st.Enrollments[k]
	if mode == dpsservice.BulkDelete {
		// [UNCONFIRMED] Only the registration ID and, when set, the
		// etag of a deleted enrollment are looked at.
		if old == nil {
			return codeNoEnrollment, msgEnrollmentAbsent
		}
		if e.ETag != "" && !etagMatches(e.ETag, old) {
			return codePrecondition, msgETag
		}
		s.removeEnrollment(k)
		return 0, ""
	}
	if code, msg := validateEnrollment(e, e.RegistrationID, s.hubs); code != 0 {
		return code, msg
	}
	switch mode {
	case dpsservice.BulkCreate:
		if old != nil {
			return codeConflict, msgEnrollmentExists
		}
	case dpsservice.BulkUpdateIfMatchETag:
		if old == nil {
			return codeNoEnrollment, msgEnrollmentAbsent
		}
		if !etagMatches(e.ETag, old) {
			return codePrecondition, msgETag
		}
	}
	s.storeEnrollment(e, old)
	return 0, ""
}

// query serves POST /enrollments/query: one page of the enrollments, in
// registration ID order, and the continuation of the next
// (docs/dps-protocol.md#bulk-operations-and-queries).
func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	if !s.serviceRequest(w, r, http.MethodPost) {
		return
	}
	var spec struct {
		Query string `json:"query"`
	}
	if err := readBody(r, &spec); err != nil {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	if !selectsAllEnrollments(spec.Query) {
		s.writeError(w, http.StatusBadRequest, codeBadRequest,
			fmt.Sprintf("Query %q is not supported by this emulator; use SELECT * FROM enrollments.", clip(spec.Query)))
		return
	}
	size := defaultPageSize
	if v := r.Header.Get(headerMaxItemCount); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("%s %q is not a page size.", headerMaxItemCount, clip(v)))
			return
		}
		if n > 0 {
			size = min(n, maxPageSize)
		}
	}
	after := ""
	if v := r.Header.Get(headerContinuation); v != "" {
		k, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || validRegistrationID(string(k)) != "" {
			s.writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("%s %q is not a continuation token.", headerContinuation, clip(v)))
			return
		}
		after = string(k)
	}
	if !s.admit(w, 1) {
		return
	}

	// Stored enrollments change under s.mu (a registration sets their
	// registrationState), so the page is encoded under it.
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.st.Enrollments))
	for k := range s.st.Enrollments {
		if k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	page := make([]*dpsservice.Enrollment, 0, min(size, len(keys)))
	for _, k := range keys[:min(size, len(keys))] {
		page = append(page, s.st.Enrollments[k])
	}
	h := w.Header()
	if len(keys) > size {
		h[headerContinuation] = []string{base64.RawURLEncoding.EncodeToString([]byte(keys[size-1]))}
	}
	h[headerItemType] = []string{itemTypeEnrollment}
	h[headerMaxItemCount] = []string{strconv.Itoa(size)}
	s.writeJSON(w, http.StatusOK, page, "")
}

// selectsAllEnrollments reports whether q asks for every individual
// enrollment: "SELECT * FROM enrollments" in any case and spacing, or the
// "*" the SDK samples send.
func selectsAllEnrollments(q string) bool {
	q = strings.ToLower(strings.Join(strings.Fields(q), " "))
	return q == "*" || q == "select * from enrollments"
}
