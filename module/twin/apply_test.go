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
