package edgehub

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// NoStore keeps nothing: what a client of one connection has in flight is
// sent again by its owner, never by paho from a store.
func TestNoStore(t *testing.T) {
	var s NoStore
	s.Open()
	p := packets.NewControlPacket(packets.Publish)
	s.Put("o.1", p)
	if got := s.Get("o.1"); got != nil {
		t.Errorf("Get after Put = %v, want nil", got)
	}
	if got := s.All(); len(got) != 0 {
		t.Errorf("All = %v, want none", got)
	}
	s.Del("o.1")
	s.Reset()
	s.Close()
}
