package hubemu_test

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// Every test's emulator and clients end with the test: no goroutine of
// mochi, the emulator or paho may outlive them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const dev = "edge1"

var (
	keyA   = []byte("module-a-primary-key-0123456789ab")
	keyB   = []byte("module-b-primary-key-0123456789ab")
	keyDev = []byte("device-primary-key-0123456789abcd")
	keys   = hubtest.Keys(map[string][]byte{dev + "/a": keyA, dev + "/b": keyB, dev: keyDev})
)

// start runs an emulator knowing modules a and b and the device, with
// fast timers; mutate changes the configuration first.
func start(t *testing.T, mutate func(*hubemu.Config)) *hubtest.Server {
	t.Helper()
	cfg := hubemu.Config{
		Key:               keys,
		ReauthInterval:    time.Second,
		MessageAckTimeout: 500 * time.Millisecond,
		Routes: map[string]string{
			"toB":      `FROM /messages/modules/a/outputs/toB INTO BrokeredEndpoint("/modules/b/inputs/in1")`,
			"upstream": `FROM /messages/modules/a/outputs/up INTO $upstream`,
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return hubtest.Start(t, cfg)
}

func wait(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// subscribe subscribes c to filter and returns the messages it receives.
func subscribe(t *testing.T, c paho.Client, filter string, qos byte) <-chan paho.Message {
	t.Helper()
	ch := make(chan paho.Message, 100)
	wait(t, "subscribe "+filter, c.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) { ch <- m }))
	return ch
}

func recv(t *testing.T, ch <-chan paho.Message, what string) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing received", what)
		return nil
	}
}

func quiet(t *testing.T, ch <-chan paho.Message, d time.Duration, what string) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("%s: received %s %q, want nothing", what, m.Topic(), m.Payload())
	case <-time.After(d):
	}
}

// onLost returns an option recording connection loss, and the channel it
// reports on.
func onLost() (func(*paho.ClientOptions), <-chan error) {
	ch := make(chan error, 1)
	return func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { ch <- err })
	}, ch
}

func lost(t *testing.T, ch <-chan error, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("%s: connection still open after %s", what, within)
	}
}

func notLost(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: connection lost: %v", what, err)
	default:
	}
}
