package lab

import (
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// Readings count once, whether they came alone or in the relay's batches,
// and what is not a reading is ignored.
func TestSensorMissing(t *testing.T) {
	s := &sensor{acked: []int64{1, 2, 3, 4, 5}}
	msgs := []hubemu.Message{
		{Body: []byte(`{"seq":1,"temperature":21}`)},
		{Body: []byte(`[{"seq":2},{"seq":4}]`)},
		{Body: []byte(`{"seq":1}`)}, // redelivered
		{Body: []byte(`not json`)},
		{Body: []byte(`[1,2,3]`)},
	}
	got := s.missing(msgs)
	if len(got) != 2 || got[0] != 3 || got[1] != 5 {
		t.Errorf("missing = %v, want [3 5]", got)
	}
	if s.published() != 5 {
		t.Errorf("published = %d", s.published())
	}
}
