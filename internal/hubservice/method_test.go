package hubservice

import (
	"net/http"
	"testing"
	"time"
)

// A method call waits as long as the hub may (response + connect + 10 s),
// not the shorter fixed Timeout of the client's HTTP client.
func TestInvokeMethodOutwaitsClientTimeout(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		time.Sleep(400 * time.Millisecond)
		w.Write([]byte(`{"status":200,"payload":"pong"}`))
	})
	c.HTTP.Timeout = 100 * time.Millisecond
	r, err := c.InvokeMethod(t.Context(), "dev", "relay", "ping", nil, 5*time.Second, 0)
	if err != nil {
		t.Fatalf("InvokeMethod: %v", err)
	}
	if r.Status != 200 || string(r.Payload) != `"pong"` {
		t.Errorf("result %+v", r)
	}
	if c.HTTP.Timeout != 100*time.Millisecond {
		t.Errorf("InvokeMethod changed the caller's client timeout to %v", c.HTTP.Timeout)
	}
}
