package queue_test

import (
	"context"
	"fmt"
	"os"

	"github.com/edgetpm/edgetpm/module/queue"
)

func Example() {
	dir, _ := os.MkdirTemp("", "queue")
	defer os.RemoveAll(dir)
	q, err := queue.Open(queue.Options{Dir: dir, MaxBytes: 64 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	ctx := context.Background()

	// The producer acknowledges its source once Append returns.
	if err := q.Append(ctx, &queue.Message{ID: "m1", Body: []byte(`{"t":21.5}`)}); err != nil {
		fmt.Println(err)
		return
	}
	// The publisher reads, sends, and acks what the hub confirmed.
	msgs, err := q.Read(ctx, 0, 100)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range msgs {
		fmt.Printf("send seq %d, $.mid %s: %s\n", m.Seq, m.ID, m.Body)
		q.Ack(m.Seq)
	}
	fmt.Println("depth", q.Stats().Depth)
	// Output:
	// send seq 1, $.mid m1: {"t":21.5}
	// depth 0
}
