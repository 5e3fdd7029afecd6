package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// funcs is the collector of the values read at scrape time: the NATS
// connection, the subscriptions' pending bytes, the certificate's expiry.
type funcs struct {
	mu         sync.Mutex
	nats       func() (connected bool, reconnects uint64)
	pending    map[string]func() int
	certExpiry func() time.Time

	connected, reconnects, pendingBytes, expiry *prometheus.Desc
}

func newFuncs() *funcs {
	return &funcs{
		pending: map[string]func() int{},
		connected: prometheus.NewDesc("fedbus_nats_connected",
			"1 while the process is connected to NATS.", nil, nil),
		reconnects: prometheus.NewDesc("fedbus_nats_reconnects_total",
			"Times the NATS connection was re-established.", nil, nil),
		pendingBytes: prometheus.NewDesc("fedbus_nats_pending_bytes",
			"Bytes received from NATS and not yet handled, by subscription (a growing value means the process cannot keep up).", []string{"subscription"}, nil),
		expiry: prometheus.NewDesc("fedbus_certificate_expiry_timestamp_seconds",
			"When this backend's certificate (FED_TLS_CERT, as loaded now) expires, in seconds since the Unix epoch.", nil, nil),
	}
}

func (f *funcs) Describe(ch chan<- *prometheus.Desc) {
	ch <- f.connected
	ch <- f.reconnects
	ch <- f.pendingBytes
	ch <- f.expiry
}

func (f *funcs) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nats != nil {
		up, n := f.nats()
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(f.connected, prometheus.GaugeValue, v)
		ch <- prometheus.MustNewConstMetric(f.reconnects, prometheus.CounterValue, float64(n))
	}
	for name, fn := range f.pending {
		ch <- prometheus.MustNewConstMetric(f.pendingBytes, prometheus.GaugeValue, float64(fn()), name)
	}
	if f.certExpiry != nil {
		if t := f.certExpiry(); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(f.expiry, prometheus.GaugeValue, float64(t.Unix()))
		}
	}
}

// SetNATS sets how the NATS connection's state is read at scrape time.
func (m *Metrics) SetNATS(fn func() (connected bool, reconnects uint64)) {
	if m == nil {
		return
	}
	m.funcs.mu.Lock()
	defer m.funcs.mu.Unlock()
	m.funcs.nats = fn
}

// AddPending adds a subscription (named by its subject) whose pending
// bytes are read at scrape time; nil fn removes it.
func (m *Metrics) AddPending(subscription string, fn func() int) {
	if m == nil {
		return
	}
	m.funcs.mu.Lock()
	defer m.funcs.mu.Unlock()
	if fn == nil {
		delete(m.funcs.pending, subscription)
		return
	}
	m.funcs.pending[subscription] = fn
}

// SetCertificateExpiry sets how the certificate's expiry is read at scrape
// time.
func (m *Metrics) SetCertificateExpiry(fn func() time.Time) {
	if m == nil {
		return
	}
	m.funcs.mu.Lock()
	defer m.funcs.mu.Unlock()
	m.funcs.certExpiry = fn
}
