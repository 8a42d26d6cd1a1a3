// Package source relays telemetry from a plant's local MQTT brokers
// (Mosquitto, Node-RED, PLC gateways) into the durable queue, one
// [Manager] for all the sources the module twin configures.
//
// The promise is store-and-forward without loss: a QoS 1 message is
// acknowledged to the local broker (PUBACK) only after the queue has
// written it to disk. While the queue refuses (full under backpressure, or
// a disk error) the acknowledgement is held and the append retried with
// backoff; the broker's in-flight window (Mosquitto's
// max_inflight_messages, 20 by default) then stops it sending more, and it
// queues the rest for us. If the source is stopped first, the broker sends
// the unacknowledged messages again on the next connection, because every
// source keeps a persistent session (clean session off) under a client ID
// that stays the same across restarts:
//
//	edge-relay-<source name>-<8 hex digits>
//
// The last part is a hash of the device and module the relay runs as
// ([Config.Identity]), so that two relays on different devices never take
// over each other's session on a shared broker.
//
// Delivery is at least once, and a message is queued once: when a
// connection drops or the process is killed between the append and the
// broker receiving our PUBACK, the broker sends the message again with
// DUP set and its packet ID, and the source recognizes it (packet ID and
// a digest of topic and payload, remembered in [Config.StateDir]),
// acknowledges it and drops it. Only a power cut in that instant may leave
// a second copy, under another message ID. QoS 0 subscriptions are best
// effort: nothing is acknowledged and a message the queue refuses when the
// source stops, or whose connection ends while it waits, is lost and
// counted ([SourceStats].Shed).
//
// What no retry can queue does not stall the source: a batch larger than
// the queue's bound is appended a message at a time, and a message that
// alone exceeds it, or that no configured filter matches, goes to the
// dead-letter store ([Config].DeadLetters) and is acknowledged once it is
// durable there. Memory is bounded by bytes as well as by count: a source
// holds at most [Config].InboxBytes of payloads between the broker and
// the queue, and while the queue pushes back the broker keeps the rest.
//
// Each message becomes one [queue.Message]:
//
//   - ID: 128 random bits in hex, kept for every send attempt ($.mid);
//   - Source: "mqtt:<source name>", the unit of ordering;
//   - Output: the topic's output, else the default output;
//   - Properties: the topic's configured properties, then [PropTopic]
//     (the MQTT topic) and, for a retained message delivered because we
//     subscribed, [PropRetained]; these two win over configured keys;
//   - ContentType "application/json" and ContentEncoding "utf-8" when the
//     payload is valid UTF-8 JSON (so IoT Hub can route on the body),
//     both empty otherwise;
//   - Body: the payload as received.
//
// Order is kept per source: paho calls the handler for one message at a
// time (OrderMatters) and a single worker appends what it hands over, in
// batches, in order. Changing a source's configuration restarts it:
// filters it no longer has are unsubscribed from the kept session, and a
// removed source (or one moved to another broker) has its session ended
// with a clean-session connect, so the broker stops keeping messages for
// it.
package source
