package relay

import (
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/twin"
)

// BenchmarkIoTHubCost prints what IoT Hub would bill for 1,000,000
// readings of 256 bytes (plausible plant JSON, plant_test.go) sent
// through the relay's real path (queue, worker, edgeHub session over TLS)
// to the hub emulator, which meters each upstream message as IoT Hub
// does (docs/edge-protocol.md#metering): one reading per message,
// batched with the defaults, batched at the best settings, gzip batches,
// and the ideal (the readings' bytes over 4096). It sends 20,000 readings
// per case and scales to a million.
//
//	go test ./module/relay -run '^$' -bench IoTHubCost -benchtime 1x
func BenchmarkIoTHubCost(b *testing.B) {
	const n, size = 20000, 256
	perMillion := func(units int) float64 { return float64(units) * 1e6 / n }
	ideal := float64(size) * 1e6 / edgehub.MeterSize
	defaults := twin.Defaults().Batching
	defaults.Enabled = true
	best := twin.Batching{Enabled: true, MaxBytes: 262144, MaxMessages: 10000, Linger: twin.Duration(time.Second), Compression: "none"}
	gz := best
	gz.Compression = "gzip"
	for b.Loop() {
		for _, c := range []struct {
			name string
			b    *twin.Batching
		}{{"unbatched", nil}, {"defaults", &defaults}, {"best", &best}, {"gzip", &gz}} {
			up := costRun(b, c.b, n, size)
			if got := readings(b, up); len(got) != n {
				b.Fatalf("%s: %d readings upstream, want %d", c.name, len(got), n)
			}
			u := perMillion(units(up))
			b.ReportMetric(u, "units/M-"+c.name)
			b.ReportMetric(u/ideal, "x-ideal-"+c.name)
			if c.name == "gzip" {
				sent, raw := 0, 0
				for _, m := range up {
					sent += len(m.Body)
				}
				for _, r := range readings(b, up) {
					raw += len(r) + 1
				}
				b.ReportMetric(float64(sent)/float64(raw), "gzip-size-ratio")
			}
		}
		b.ReportMetric(ideal, "units/M-ideal")
	}
}
