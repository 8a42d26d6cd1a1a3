package twin

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// Apply runs on the ctx of the call that applies (Start, Sync or Patch),
// so that shutdown reaches a configuration being put into effect.
func TestApplyContext(t *testing.T) {
	r := &Reconciler{
		Get:    func(context.Context) ([]byte, error) { return []byte(`{"desired":{"$version":1,"output":"a"}}`), nil },
		Report: func(context.Context, []byte) error { return nil },
	}
	type key struct{}
	var got []any
	r.Apply = func(ctx context.Context, _ Config) error {
		got = append(got, ctx.Value(key{}))
		return nil
	}
	with := func(v string) context.Context { return context.WithValue(t.Context(), key{}, v) }
	if _, err := r.Start(with("start")); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(with("sync")); err != nil {
		t.Fatal(err)
	}
	if err := r.Patch(with("patch"), []byte(`{"$version":2,"output":"b"}`)); err != nil {
		t.Fatal(err)
	}
	if want := []any{"start", "sync", "patch"}; !slices.Equal(got, want) {
		t.Errorf("Apply ran on the ctx of %v, want %v", got, want)
	}

	// An Apply that blocks ends when its caller's ctx does.
	ctx, cancel := context.WithCancel(t.Context())
	var applyErr error
	r.Apply = func(ctx context.Context, _ Config) error {
		cancel() // shutdown, while applying
		select {
		case <-ctx.Done():
			applyErr = ctx.Err()
		case <-time.After(30 * time.Second):
			applyErr = errors.New("its ctx never ended")
		}
		return applyErr
	}
	r.Patch(ctx, []byte(`{"$version":3,"output":"c"}`))
	if !errors.Is(applyErr, context.Canceled) {
		t.Errorf("a blocked Apply after its Patch's ctx ended: %v, want %v", applyErr, context.Canceled)
	}
}

// A report the hub did not take is sent by the next Sync, although the
// version is not new; one it took is not sent again.
func TestReportSentAgain(t *testing.T) {
	svc := &twinService{desired: map[string]any{"$version": 2.0, "output": "a"}}
	fail := true
	r := &Reconciler{Get: svc.get, Apply: func(context.Context, Config) error { return nil }}
	r.Report = func(ctx context.Context, p []byte) error {
		if fail {
			return context.DeadlineExceeded
		}
		return svc.report(ctx, p)
	}
	r.Start(t.Context())
	if err := r.Sync(t.Context()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with the report lost = %v, want its error", err)
	}
	if r.Version() != 2 {
		t.Fatalf("version %d after a lost report, want 2 applied", r.Version())
	}
	fail = false
	if err := r.Sync(t.Context()); err != nil || len(svc.reported) != 1 || svc.last()["version"] != 2.0 {
		t.Fatalf("Sync after a lost report = %v, reported %v; want version 2 reported", err, svc.reported)
	}
	if err := r.Sync(t.Context()); err != nil || len(svc.reported) != 1 {
		t.Errorf("Sync with nothing new = %v, reported %d times, want once", err, len(svc.reported))
	}
}
