package queue

import "time"

// Message is one queued telemetry message. The queue assigns Seq; every
// other field is the producer's and comes back unchanged.
type Message struct {
	// Seq is the queue's position, increasing by one per message appended.
	Seq uint64
	// ID is the stable message ID, sent as $.mid on every attempt.
	ID string
	// Source names where it came from ("edgehub:<input>", "mqtt:<source>");
	// order is kept per source.
	Source string
	// Enqueued is when it was appended; Expires, when not zero, is when it
	// becomes stale and is dropped instead of sent.
	Enqueued, Expires time.Time
	// Output is the edgeHub output to send it to.
	Output                       string
	ContentType, ContentEncoding string
	Properties                   map[string]string
	Body                         []byte
	// Rank orders the drain after an outage, higher first (twin.Ranks);
	// zero, the lowest, is a message without priority. It is not stored:
	// the relay keeps each rank in a queue of its own.
	Rank uint8
}
