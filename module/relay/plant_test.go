package relay

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// plant makes plausible JSON readings of a plant's PLCs: a timestamp,
// site, line, asset, tag and unit names, a drifting float value, a set
// point, quality and a sequence number, padded to the size asked with a
// random trace ID (which gzip cannot shrink much), so that compression
// is measured on what a plant sends rather than on repeated bytes.
type plant struct {
	rng    *rand.Rand
	t      time.Time
	seq    int
	values []float64
}

var plantTags = []struct{ asset, tag, unit string }{
	{"press-07", "hydraulic_pressure", "bar"},
	{"press-07", "ram_position", "mm"},
	{"press-08", "hydraulic_pressure", "bar"},
	{"oven-2", "zone3_temperature", "degC"},
	{"oven-2", "burner_gas_flow", "m3/h"},
	{"pump-4", "motor_current", "A"},
	{"pump-4", "vibration_rms", "mm/s"},
	{"conveyor-1", "belt_speed", "m/s"},
}

func newPlant(seed uint64) *plant {
	p := &plant{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), t: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)}
	for range plantTags {
		p.values = append(p.values, 10+p.rng.Float64()*200)
	}
	return p
}

// reading returns the next reading, exactly size bytes long (at least
// about 230).
func (p *plant) reading(size int) []byte {
	p.seq++
	p.t = p.t.Add(time.Duration(80+p.rng.IntN(40)) * time.Millisecond)
	i := p.rng.IntN(len(plantTags))
	p.values[i] += p.rng.NormFloat64() * 0.5
	tag := plantTags[i]
	quality := "good"
	if p.rng.IntN(50) == 0 {
		quality = "uncertain"
	}
	head := fmt.Sprintf(`{"ts":%q,"site":"north","line":"line-3","asset":%q,"tag":%q,"value":%s,"setpoint":%s,"unit":%q,"quality":%q,"plc":"S7-1516-3PN","seq":%d,"trace":"`,
		p.t.Format("2006-01-02T15:04:05.000Z07:00"), tag.asset, tag.tag, strconv.FormatFloat(p.values[i], 'f', 4, 64),
		strconv.FormatFloat(float64(int(p.values[i]/10)*10), 'f', 1, 64), tag.unit, quality, p.seq)
	pad := max(0, size-len(head)-2)
	trace := make([]byte, (pad+1)/2)
	for j := range trace {
		trace[j] = byte(p.rng.Uint32())
	}
	return []byte(head + hex.EncodeToString(trace)[:pad] + `"}`)
}
