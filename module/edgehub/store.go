package edgehub

import "github.com/eclipse/paho.mqtt.golang/packets"

// NoStore is a paho Store that keeps nothing. paho's default, a memory
// store, takes a lock, a map entry and log calls for every QoS 1 packet in
// and out, to re-send them on a reconnect of the same client. The relay
// makes a new client for every connection, and what was in flight goes
// again anyway: a Session re-sends its own publishes in order, and a
// plant broker re-sends what the relay did not acknowledge. Safe for
// concurrent use.
type NoStore struct{}

// The methods of mqtt.Store, keeping nothing.

func (NoStore) Open()                             {}
func (NoStore) Put(string, packets.ControlPacket) {}
func (NoStore) Get(string) packets.ControlPacket  { return nil }
func (NoStore) All() []string                     { return nil }
func (NoStore) Del(string)                        {}
func (NoStore) Close()                            {}
func (NoStore) Reset()                            {}
