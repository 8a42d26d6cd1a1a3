package hubemu_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// A module sends telemetry to an output routed upstream.
func Example() {
	key := []byte("module-key")
	emu, err := hubemu.New(hubemu.Config{
		Key: func(d, m string) ([]byte, bool) { return key, d == "edge1" && m == "filter" },
		Routes: map[string]string{
			"upstream": "FROM /messages/modules/filter/outputs/* INTO $upstream",
		},
	})
	if err != nil {
		panic(err)
	}
	ca, _ := pki.NewCA()
	serverTLS, _ := ca.ServerTLS(emu.GatewayHostName())
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- emu.Serve(ctx, l, serverTLS) }()
	defer func() { stop(); <-served }()

	token, _ := sas.New(ctx, sas.Key(key), sas.ModuleResource(emu.HubHostName(), "edge1", "filter"), "", time.Now().Add(time.Hour))
	c := paho.NewClient(paho.NewClientOptions().
		AddBroker("tls://" + l.Addr().String()).
		SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), ServerName: emu.GatewayHostName()}).
		SetProtocolVersion(4).
		SetClientID("edge1/filter").
		SetUsername(emu.HubHostName() + "/edge1/filter/?api-version=2019-10-01").
		SetPassword(token))
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		panic(tok.Error())
	}
	defer c.Disconnect(100)
	c.Publish("devices/edge1/modules/filter/messages/events/%24.on=alerts&site=plant%201", 1, false, `{"t":81.2}`).Wait()

	up, _ := emu.WaitUpstream(ctx, 1)
	fmt.Println(up[0].From, up[0].Output, up[0].Properties["site"], string(up[0].Body))
	// Output: edge1/filter alerts plant 1 {"t":81.2}
}
