package edgehub

import (
	"testing"
	"time"
)

// twinAnswer is a twin response as paho hands it on.
type twinAnswer struct{ topic string }

func (m twinAnswer) Duplicate() bool   { return false }
func (m twinAnswer) Qos() byte         { return 0 }
func (m twinAnswer) Retained() bool    { return false }
func (m twinAnswer) Topic() string     { return m.topic }
func (m twinAnswer) MessageID() uint16 { return 0 }
func (m twinAnswer) Payload() []byte   { return []byte("{}") }
func (m twinAnswer) Ack()              {}

// A twin answer that comes while the connection ends: the request gets
// one outcome, and neither the answer's handler nor failPending blocks on
// a channel the request no longer reads (which hung the session for
// good).
func TestAnswerRacesConnectionEnd(t *testing.T) {
	s := &Session{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			ch := make(chan twinResponse, 1)
			rid := "1"
			s.pending.Store(rid, ch)
			answered := make(chan struct{})
			go func() {
				s.onTwinResponse(t.Context(), nil, twinAnswer{topic: "$iothub/twin/res/200/?$rid=" + rid})
				close(answered)
			}()
			s.failPending()
			<-answered
			select {
			case <-ch:
			default:
				t.Errorf("round %d: the request got no outcome", i)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("failPending or the answer's handler blocked")
	}
}
