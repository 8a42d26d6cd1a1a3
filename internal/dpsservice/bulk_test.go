package dpsservice_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

// softEK is an RSA EK public area (TPM2B_PUBLIC) with a software modulus:
// the emulator checks its shape, not that a TPM holds it.
func softEK(t testing.TB) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := tpm2.RSAEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tpm2.New2B(tmpl))
}

func tpmEnrollment(regID string, ek []byte) dpsservice.Enrollment {
	return dpsservice.Enrollment{RegistrationID: regID, Attestation: dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}}}
}

// wantBulk checks a bulk result: isSuccessful, and the failed
// registration IDs with their errorCode.
func wantBulk(t *testing.T, what string, res *dpsservice.BulkResult, err error, failed map[string]int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	got := map[string]int{}
	for _, e := range res.Errors {
		if e.ErrorStatus == "" {
			t.Errorf("%s: %s failed without an errorStatus", what, e.RegistrationID)
		}
		got[e.RegistrationID] = e.ErrorCode
	}
	if res.IsSuccessful != (len(failed) == 0) || fmt.Sprint(got) != fmt.Sprint(failed) {
		t.Errorf("%s: isSuccessful %v, errors %v; want %v", what, res.IsSuccessful, got, failed)
	}
}

func TestBulkModes(t *testing.T) {
	ek := softEK(t)
	s := dpstest.Start(t, dpsemu.Config{}, nil)
	c, ctx := s.Service, t.Context()
	get := func(id string) *dpsservice.Enrollment {
		t.Helper()
		e, err := c.GetEnrollment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	absent := func(id string) {
		t.Helper()
		var se *dpsservice.ServiceError
		if _, err := c.GetEnrollment(ctx, id); !errors.As(err, &se) || se.HTTPStatus != http.StatusNotFound {
			t.Errorf("GetEnrollment(%s) = %v, want 404", id, err)
		}
	}

	res, err := c.Bulk(ctx, dpsservice.BulkCreate, []dpsservice.Enrollment{tpmEnrollment("a", ek), tpmEnrollment("b", ek), tpmEnrollment("c", ek)})
	wantBulk(t, "create", res, err, nil)
	if a := get("a"); a.ETag == "" || a.ProvisioningStatus != dpsservice.StatusEnabled || a.CreatedDateTimeUTC.IsZero() {
		t.Errorf("created a = %+v", a)
	}

	// Each enrollment stands or fails on its own: a exists, e's EK is
	// bad, d is created all the same.
	bad := tpmEnrollment("e", []byte{0, 2, 1, 2})
	res, err = c.Bulk(ctx, dpsservice.BulkCreate, []dpsservice.Enrollment{tpmEnrollment("A", ek), tpmEnrollment("d", ek), bad})
	wantBulk(t, "create over a", res, err, map[string]int{"A": 409201, "e": 400004})
	get("d")
	absent("e")

	// update creates or replaces, whatever the etag.
	oldA := get("a")
	upA := tpmEnrollment("a", ek)
	upA.ProvisioningStatus, upA.ETag = dpsservice.StatusDisabled, `"stale"`
	res, err = c.Bulk(ctx, dpsservice.BulkUpdate, []dpsservice.Enrollment{upA, tpmEnrollment("f", ek)})
	wantBulk(t, "update", res, err, nil)
	newA := get("a")
	if newA.ProvisioningStatus != dpsservice.StatusDisabled || newA.ETag == oldA.ETag || !newA.CreatedDateTimeUTC.Equal(oldA.CreatedDateTimeUTC) {
		t.Errorf("updated a = %+v, was %+v", newA, oldA)
	}
	get("f")

	// updateIfMatchETag: the current etag passes, a stale one is 412, a
	// missing enrollment 404.
	upA.ProvisioningStatus, upA.ETag = dpsservice.StatusEnabled, newA.ETag
	staleB := tpmEnrollment("b", ek)
	staleB.ETag, staleB.DeviceID = oldA.ETag, "never"
	g := tpmEnrollment("g", ek)
	g.ETag = "*"
	res, err = c.Bulk(ctx, dpsservice.BulkUpdateIfMatchETag, []dpsservice.Enrollment{upA, staleB, g})
	wantBulk(t, "updateIfMatchETag", res, err, map[string]int{"b": 412002, "g": 404201})
	if a := get("a"); a.ProvisioningStatus != dpsservice.StatusEnabled || a.ETag == newA.ETag {
		t.Errorf("a after updateIfMatchETag = %+v", a)
	}
	if b := get("b"); b.DeviceID != "" {
		t.Errorf("b changed by a refused update: %+v", b)
	}
	absent("g")

	// delete: by registration ID, refused for a stale etag or a missing
	// enrollment.
	staleB.ETag = `"stale"`
	res, err = c.Bulk(ctx, dpsservice.BulkDelete, []dpsservice.Enrollment{{RegistrationID: "a"}, staleB, {RegistrationID: "zz"}, {RegistrationID: "c", ETag: get("c").ETag}})
	wantBulk(t, "delete", res, err, map[string]int{"b": 412002, "zz": 404201})
	absent("a")
	absent("c")
	get("b")

	// Refused whole: more than MaxBulk, none, a registration ID twice.
	eleven := make([]dpsservice.Enrollment, dpsservice.MaxBulk+1)
	for i := range eleven {
		eleven[i] = tpmEnrollment(fmt.Sprintf("n-%d", i), ek)
	}
	for name, es := range map[string][]dpsservice.Enrollment{
		"eleven": eleven, "none": nil, "twice": {tpmEnrollment("h", ek), tpmEnrollment("H", ek)},
	} {
		var se *dpsservice.ServiceError
		if _, err := c.Bulk(ctx, dpsservice.BulkCreate, es); !errors.As(err, &se) || se.HTTPStatus != http.StatusBadRequest || se.Code != 400001 {
			t.Errorf("Bulk(%s) = %v, want 400/400001", name, err)
		}
	}
	absent("n-0")
	absent("h")
}

// QueryPage walks 2,500 enrollments page by page, each once.
func TestQueryPaging(t *testing.T) {
	ek := softEK(t)
	s := dpstest.Start(t, dpsemu.Config{ServiceOpsPerMinute: -1}, nil)
	c, ctx := s.Service, t.Context()
	var want []string
	for i := 0; i < 2500; i += dpsservice.MaxBulk {
		es := make([]dpsservice.Enrollment, dpsservice.MaxBulk)
		for j := range es {
			es[j] = tpmEnrollment(fmt.Sprintf("dev-%04d", i+j), ek)
			want = append(want, es[j].RegistrationID)
		}
		res, err := c.Bulk(ctx, dpsservice.BulkCreate, es)
		wantBulk(t, "create", res, err, nil)
	}
	var got []string
	cont, pages := "", 0
	for {
		page, next, err := c.QueryPage(ctx, "SELECT * FROM enrollments", 300, cont)
		if err != nil {
			t.Fatal(err)
		}
		if pages++; len(page) > 300 || (next != "" && len(page) != 300) {
			t.Fatalf("page %d: %d items, continuation %q", pages, len(page), next)
		}
		for _, e := range page {
			if e.ETag == "" || e.Attestation.TPM == nil {
				t.Fatalf("page %d holds %+v", pages, e)
			}
			got = append(got, e.RegistrationID)
		}
		if next == "" {
			break
		}
		cont = next
	}
	slices.Sort(got)
	if pages != 9 || !slices.Equal(got, want) {
		t.Errorf("%d pages, %d enrollments (%d distinct); want 9 pages of all 2500", pages, len(got), len(slices.Compact(got)))
	}
	page, next, err := c.QueryPage(ctx, "*", 0, "")
	if err != nil || len(page) != 100 || next == "" {
		t.Errorf("QueryPage with the default page size: %d items, continuation %q, %v; want 100 and more", len(page), next, err)
	}
}

// The client waits out DPS's retry-after, from the rate limit and from an
// injected 429, tells OnRetry, and the request then succeeds.
func TestRetryAfter(t *testing.T) {
	ek := softEK(t)
	clock := testclock.New(time.Now())
	s := dpstest.Start(t, dpsemu.Config{Now: clock.Now, ServiceOpsPerMinute: dpsservice.MaxBulk}, nil)
	type retry struct {
		status int
		wait   time.Duration
	}
	var (
		mu      sync.Mutex
		retries []retry
	)
	c := *s.Service
	c.OnRetry = func(_ context.Context, status int, wait time.Duration) {
		mu.Lock()
		retries = append(retries, retry{status, wait})
		mu.Unlock()
		clock.Add(wait)
	}
	ctx := t.Context()
	es := make([]dpsservice.Enrollment, dpsservice.MaxBulk)
	for i := range es {
		es[i] = tpmEnrollment(fmt.Sprintf("dev-%d", i), ek)
	}
	res, err := c.Bulk(ctx, dpsservice.BulkCreate, es)
	wantBulk(t, "create", res, err, nil)

	// The minute's ten operations are spent; a second before it ends, a
	// GET waits that second.
	clock.Add(59 * time.Second)
	start := time.Now()
	if _, err := c.GetEnrollment(ctx, "dev-0"); err != nil {
		t.Fatal(err)
	}
	// An injected 429 on the next request.
	s.SetServiceFaults(dpsemu.Faults{Throttle: 1, ThrottleRetryAfter: 1})
	if _, _, err := c.QueryPage(ctx, "*", 0, ""); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("two retries after retry-after: 1 took %v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []retry{{429, time.Second}, {429, time.Second}}; !slices.Equal(retries, want) {
		t.Errorf("OnRetry saw %v, want %v", retries, want)
	}
}
