package relay

import (
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/queue"
)

// Metrics are the relay's Prometheus metrics, in a registry of their own.
type Metrics struct {
	Registry     *prometheus.Registry
	Intake       *prometheus.CounterVec // by source
	Sent         prometheus.Counter     // publishes acknowledged (a batch counts once)
	Acknowledged prometheus.Counter     // messages acknowledged upstream
	Dropped      *prometheus.CounterVec // by reason
	Duplicates   prometheus.Counter
	Refused      *prometheus.CounterVec // intake refused: "full", "dead_letters_full", "error"

	connected     atomic.Pointer[func() bool]
	tokenRenewals atomic.Pointer[func() int64]
}

func newMetrics(stats func() queue.Stats, dead deadLetters) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry:     reg,
		Intake:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgerelay_intake_messages_total", Help: "Messages queued, by source."}, []string{"source"}),
		Sent:         prometheus.NewCounter(prometheus.CounterOpts{Name: "edgerelay_sent_messages_total", Help: "Messages published and acknowledged upstream (a batch counts once)."}),
		Acknowledged: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgerelay_acknowledged_messages_total", Help: "Queued messages acknowledged upstream."}),
		Dropped:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgerelay_dropped_messages_total", Help: "Messages dropped, by reason."}, []string{"reason"}),
		Duplicates:   prometheus.NewCounter(prometheus.CounterOpts{Name: "edgerelay_duplicate_messages_total", Help: "Redelivered input messages dropped by $.mid."}),
		Refused:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgerelay_intake_refused_total", Help: "Intake not acknowledged to its producer, by reason."}, []string{"reason"}),
	}
	gauge := func(name, help string, f func(queue.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	reg.MustRegister(m.Intake, m.Sent, m.Acknowledged, m.Dropped, m.Duplicates, m.Refused,
		gauge("edgerelay_queue_depth_messages", "Messages queued and not yet acknowledged upstream.", func(s queue.Stats) float64 { return float64(s.Depth) }),
		gauge("edgerelay_queue_bytes", "Bytes of queued messages.", func(s queue.Stats) float64 { return float64(s.Bytes) }),
		gauge("edgerelay_queue_disk_bytes", "Bytes the queue uses on disk.", func(s queue.Stats) float64 { return float64(s.DiskBytes) }),
		gauge("edgerelay_queue_oldest_age_seconds", "Age of the oldest queued message.", func(s queue.Stats) float64 { return s.OldestAge.Seconds() }),
		gauge("edgerelay_queue_corrupt_records_total", "Damaged records skipped (kept as evidence in queue/damaged) and torn tails cut, since the queue opened.", func(s queue.Stats) float64 { return float64(s.Corrupt) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edgerelay_connected", Help: "1 while connected to edgeHub or IoT Hub."}, func() float64 {
			if m.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edgerelay_token_renewals_total", Help: "Reconnects made to renew the SAS token."}, func() float64 {
			if f := m.tokenRenewals.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		}),
	)
	// Queue drops happen inside the queue; export its counts by reason.
	reg.MustRegister(queueDrops{stats})
	if dead != nil {
		reg.MustRegister(deadLetterCounts{dead})
	}
	return m
}

// deadLetterCounts exports the dead-letter store's counts.
type deadLetterCounts struct{ d deadLetters }

var (
	deadLettersDesc = prometheus.NewDesc("edgerelay_dead_letters_total",
		"Messages put in the dead-letter store since start, by reason: too_large (over 256 KiB with properties), queue_limit (over the queue's bound), unrouted (no source topic matches).", []string{"reason"}, nil)
	deadLettersStoredDesc = prometheus.NewDesc("edgerelay_dead_letters_stored",
		"Dead letters held in the store now.", nil, nil)
	deadLettersBytesDesc = prometheus.NewDesc("edgerelay_dead_letters_bytes",
		"Bytes the dead-letter store holds.", nil, nil)
	deadLettersRefusedDesc = prometheus.NewDesc("edgerelay_dead_letters_refused_total",
		"Dead letters refused because the store was full (their producers are held back).", nil, nil)
	deadLettersTruncatedDesc = prometheus.NewDesc("edgerelay_dead_letters_truncated_total",
		"Dead letters whose body was kept cut to the store's maximum.", nil, nil)
)

func (deadLetterCounts) Describe(ch chan<- *prometheus.Desc) {
	ch <- deadLettersDesc
	ch <- deadLettersStoredDesc
	ch <- deadLettersBytesDesc
	ch <- deadLettersRefusedDesc
	ch <- deadLettersTruncatedDesc
}

func (c deadLetterCounts) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Stats()
	for reason, n := range st.Added {
		ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(deadLettersStoredDesc, prometheus.GaugeValue, float64(st.Count))
	ch <- prometheus.MustNewConstMetric(deadLettersBytesDesc, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(deadLettersRefusedDesc, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(deadLettersTruncatedDesc, prometheus.CounterValue, float64(st.Truncated))
}

// queueDrops exports the queue's drop counts, by reason, as counters.
type queueDrops struct{ stats func() queue.Stats }

var queueDropsDesc = prometheus.NewDesc("edgerelay_queue_dropped_messages_total",
	"Messages the queue dropped, by reason: full (dropOldest), expired ($.exp), age (queue.maxAge).", []string{"reason"}, nil)

func (queueDrops) Describe(ch chan<- *prometheus.Desc) { ch <- queueDropsDesc }

func (d queueDrops) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range d.stats().Dropped {
		ch <- prometheus.MustNewConstMetric(queueDropsDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// SetConnected sets where the connection state comes from.
func (m *Metrics) SetConnected(f func() bool) { m.connected.Store(&f) }

// Connected reports the connection state.
func (m *Metrics) Connected() bool {
	f := m.connected.Load()
	return f != nil && (*f)()
}

// TokenRenewals sets where the renewal count comes from.
func (m *Metrics) TokenRenewals(f func() int64) { m.tokenRenewals.Store(&f) }

func (m *Metrics) refused(err error) {
	if errors.Is(err, deadletter.ErrFull) {
		m.Refused.WithLabelValues("dead_letters_full").Inc()
		return
	}
	if errors.Is(err, queue.ErrFull) {
		m.Refused.WithLabelValues("full").Inc()
		return
	}
	m.Refused.WithLabelValues("error").Inc()
}

// Handler serves /metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
