package relay

import (
	"crypto/sha256"
	"sync"
)

// maxKey bounds what the window keeps of a $.mid: the sender chooses it,
// of any length, so a longer one is kept as its SHA-256.
const maxKey = 64

// claim is what dedupe.claim found.
type claim int

const (
	claimed claim = iota // new: the caller queues it, then settles
	seen                 // queued before: a redelivery
	busy                 // being queued by another delivery now
)

// dedupe remembers the last n message IDs queued, oldest forgotten first,
// and those being queued. It is safe for concurrent use.
type dedupe struct {
	mu   sync.Mutex
	ids  map[string]bool // key → queued (true) or being queued (false)
	ring []string        // the queued keys, oldest at next
	next int
}

func newDedupe(n int) *dedupe {
	return &dedupe{ids: make(map[string]bool, n), ring: make([]string, n)}
}

func dedupeKey(id string) string {
	if len(id) <= maxKey {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + string(sum[:])
}

// claim checks for id and, when it is new, marks it as being queued, in
// one step, so two deliveries of one message cannot both be queued. A
// claimed key must be settled.
func (d *dedupe) claim(id string) (key string, c claim) {
	key = dedupeKey(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	queued, ok := d.ids[key]
	switch {
	case ok && queued:
		return key, seen
	case ok:
		return key, busy
	}
	d.ids[key] = false
	return key, claimed
}

// settle ends a claim: queued, key joins the window; otherwise it is
// forgotten, so that the next delivery is queued.
func (d *dedupe) settle(key string, queued bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !queued {
		delete(d.ids, key)
		return
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.ids, old)
	}
	d.ring[d.next] = key
	d.ids[key] = true
	d.next = (d.next + 1) % len(d.ring)
}
