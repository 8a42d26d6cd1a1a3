package workload_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/workloademu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/module/workload"
)

// A module signs its SAS token through the workload API, with the
// variables edgeAgent gives it (docs/edge-protocol.md#module-environment, #sas-tokens-for-edgehub).
func ExampleClient_Sign() {
	dir, _ := os.MkdirTemp("", "wl")
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "workload.sock")

	// aziot-edged's side, here the emulator.
	emu, _ := workloademu.New(workloademu.Config{Key: func(m string) ([]byte, bool) {
		return []byte("module key"), m == "filtermodule"
	}})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- emu.Serve(ctx, socket) }()
	defer func() { stop(); <-done }()

	// The module's side; Sign waits for the socket to appear.
	c, err := workload.New("unix://"+socket, "filtermodule", "637862958472233925", "2022-08-03")
	if err != nil {
		fmt.Println(err)
		return
	}
	digest, err := c.Sign(ctx, []byte("hello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(base64.StdEncoding.EncodeToString(digest))

	token, err := sas.New(ctx, c, sas.ModuleResource("myhub.azure-devices.net", "edge1", "filtermodule"), "", time.Unix(1767225600, 0))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(token)
	// Output:
	// NjeDW17bTyi7F771wnsUaznPNJc4Zusgw7ZdLF5v2AA=
	// SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge1%2Fmodules%2Ffiltermodule&sig=%2B0kwfTVMvu57lFJMBuuKOKqC%2BmUV4Ftlqnr4dmPZPG4%3D&se=1767225600
}
