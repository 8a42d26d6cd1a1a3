package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// queues are the relay's durable queues, one per drain rank in use
// (twin.Ranks): rank zero (no priority) in <data>/queue, where the relay
// kept everything before priorities, so an upgrade keeps what was
// queued; priority p in <data>/queue-priority-<p>. It closes what it
// opened.
type queues struct {
	data string
	opts queue.Options // all but Dir; the relay sets each one's share of the bounds

	mu   sync.Mutex
	open []*queue.Queue
}

func newQueues(data string, opts queue.Options) *queues {
	return &queues{data: data, opts: opts}
}

const priorityPrefix = "queue-priority-"

func (qs *queues) dir(rank uint8) string {
	if rank == 0 {
		return filepath.Join(qs.data, "queue")
	}
	return filepath.Join(qs.data, priorityPrefix+twin.PriorityName(rank))
}

// Open opens the queue of rank; each once.
func (qs *queues) Open(rank uint8) (*queue.Queue, error) {
	o := qs.opts
	o.Dir = qs.dir(rank)
	q, err := queue.Open(o)
	if err != nil {
		return nil, err
	}
	qs.mu.Lock()
	qs.open = append(qs.open, q)
	qs.mu.Unlock()
	return q, nil
}

// Existing opens the queues of priorities that an earlier run left on
// disk, by rank, so that what they hold drains in its priority.
func (qs *queues) Existing() (map[uint8]*queue.Queue, error) {
	ents, err := os.ReadDir(qs.data)
	if err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	out := map[uint8]*queue.Queue{}
	for _, e := range ents {
		p, err := strconv.Atoi(strings.TrimPrefix(e.Name(), priorityPrefix))
		if !e.IsDir() || !strings.HasPrefix(e.Name(), priorityPrefix) || err != nil || p < 0 || p > 9 {
			continue
		}
		rank := twin.RankOf(&p)
		if out[rank], err = qs.Open(rank); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Close closes every queue opened.
func (qs *queues) Close() error {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var errs []error
	for _, q := range qs.open {
		errs = append(errs, q.Close())
	}
	qs.open = nil
	return errors.Join(errs...)
}
