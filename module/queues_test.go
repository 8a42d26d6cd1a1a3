package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// Rank zero stays in <data>/queue, where the relay kept everything before
// priorities, so an upgrade keeps what was queued; what a priority's queue
// holds is found again at the next start, in that priority.
func TestQueuesSurviveRestart(t *testing.T) {
	data := t.TempDir()
	old, err := queue.Open(queue.Options{Dir: filepath.Join(data, "queue")})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Append(context.Background(), &queue.Message{ID: "before-upgrade", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	old.Close()

	alarm := twin.RankOf(new(0))
	qs := newQueues(data, queue.Options{})
	q0, err := qs.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if d := q0.Stats().Depth; d != 1 {
		t.Errorf("rank 0 after the upgrade: depth %d, want 1", d)
	}
	q, err := qs.Open(alarm)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Append(context.Background(), &queue.Message{ID: "alarm", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := qs.Close(); err != nil {
		t.Fatal(err)
	}

	qs = newQueues(data, queue.Options{})
	defer qs.Close()
	lanes, err := qs.Existing()
	if err != nil {
		t.Fatal(err)
	}
	if len(lanes) != 1 || lanes[alarm] == nil {
		t.Fatalf("Existing() = %v, want the queue of priority 0 (rank %d)", lanes, alarm)
	}
	msgs, err := lanes[alarm].Read(t.Context(), 0, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ID != "alarm" {
		t.Errorf("priority 0 queue after a restart: %v, %v; want the alarm", msgs, err)
	}
}
