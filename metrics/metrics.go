// Package metrics defines every Prometheus metric of fedbus (contract
// section 7): their names (all start with fedbus_), help texts, labels and
// buckets, in one place, and the registry of one process that /metrics
// serves.
//
// Label values stay bounded whatever the traffic: a domain label keeps only
// the domains that the operator named (FED_ALLOW_LIST and the remotes of the
// dynamic configuration); every other domain is folded into OtherDomain. A
// component outside FED_COMPONENTS is folded into OtherComponent, and an
// outcome is "success" or one of the contract's error labels.
//
// A nil *Metrics records nothing: packages take one in their Deps and work
// without it (tests, benchmarks).
package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fedbus/fedbus/contract"
)

// Folded label values.
const (
	// OtherDomain stands for every domain the operator did not name.
	OtherDomain = "other"
	// OtherComponent stands for every component outside FED_COMPONENTS.
	OtherComponent = "other"
	// OutcomeSuccess is the outcome of a request that succeeded; a failed
	// one has the contract label of its error.
	OutcomeSuccess = "success"
)

// Directions of the refusal and TLS handshake counters.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
)

// DurationBuckets are the buckets (seconds) of the request duration
// histograms: from 5 ms to the 30 s beyond the default request timeout.
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Metrics are the metrics of one fedbus process. Safe for concurrent use.
type Metrics struct {
	reg        *prometheus.Registry
	components []string
	listed     atomic.Pointer[func(string) bool]

	requestsOut   *prometheus.CounterVec
	requestsIn    *prometheus.CounterVec
	durationOut   *prometheus.HistogramVec
	durationIn    *prometheus.HistogramVec
	inFlightOut   *prometheus.GaugeVec
	inFlightIn    *prometheus.GaugeVec
	refusals      *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec
	discovery     *prometheus.CounterVec
	dnsErrors     *prometheus.CounterVec
	remoteUp      *prometheus.GaugeVec
	statusEvents  *prometheus.CounterVec
	notifBacklog  *prometheus.GaugeVec
	notifAge      *prometheus.GaugeVec
	discoveryHits [2][3]prometheus.Counter // by kind, then result: no label lookup on the hot path
	funcs         *funcs
}

// New returns the metrics of a process whose FED_COMPONENTS are
// components, registered in a new registry with build information and
// the Go and process collectors.
func New(components []string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), components: slices.Clone(components), funcs: newFuncs()}
	none := func(string) bool { return false }
	m.listed.Store(&none)
	m.requestsOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_requests_out_total",
		Help: "Federated requests this federator handled for local components, by target domain, component and outcome (success or the contract error label).",
	}, []string{"domain", "component", "outcome"})
	m.requestsIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_requests_in_total",
		Help: "Federated requests this ingress answered for remote backends, by origin domain, component and outcome (success or the contract error label).",
	}, []string{"domain", "component", "outcome"})
	m.durationOut = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fedbus_request_out_duration_seconds",
		Help:    "Time from a component's request reaching the federator to its reply, by target domain and component.",
		Buckets: DurationBuckets,
	}, []string{"domain", "component"})
	m.durationIn = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fedbus_request_in_duration_seconds",
		Help:    "Time from a remote request reaching the ingress to its answer, by origin domain and component.",
		Buckets: DurationBuckets,
	}, []string{"domain", "component"})
	m.inFlightOut = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_requests_out_in_flight",
		Help: "Outbound requests in flight, by target domain.",
	}, []string{"domain"})
	m.inFlightIn = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_requests_in_in_flight",
		Help: "Inbound requests in flight, by origin domain.",
	}, []string{"domain"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_refusals_total",
		Help: "Requests refused by this backend's own checks before they reached a remote (outbound) or a component (inbound), by direction and contract error label.",
	}, []string{"direction", "label"})
	m.tlsFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_tls_handshake_failures_total",
		Help: "Failed TLS handshakes with remote backends, by direction and reason.",
	}, []string{"direction", "reason"})
	m.discovery = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_discovery_lookups_total",
		Help: "Discovery lookups by record type (srv, addr) and result: hit (fresh cached answer), miss (asked DNS), stale (expired answer served while DNS fails).",
	}, []string{"type", "result"})
	m.dnsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_dns_errors_total",
		Help: "DNS queries that failed (timeout, SERVFAIL, refused, unreachable server), by record type.",
	}, []string{"type"})
	m.remoteUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_remote_up",
		Help: "1 when the remote domain is reachable as far as this backend's traffic shows, 0 while it is down (remote status events).",
	}, []string{"domain"})
	m.statusEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedbus_remote_status_events_total",
		Help: "Remote status events (fedbus.remote.down, fedbus.remote.up) this process published, by type.",
	}, []string{"type"})
	m.notifBacklog = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_notification_backlog",
		Help: "Notifications stored and not yet delivered, by destination domain.",
	}, []string{"domain"})
	m.notifAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_notification_oldest_age_seconds",
		Help: "Age of the oldest undelivered notification, by destination domain.",
	}, []string{"domain"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedbus_build_info",
		Help: "Build of this binary: always 1, with the module version, VCS revision and Go version as labels.",
	}, []string{"version", "revision", "goversion"})
	v := ReadBuild()
	build.WithLabelValues(v.Version, v.Revision, v.GoVersion).Set(1)
	m.reg.MustRegister(m.requestsOut, m.requestsIn, m.durationOut, m.durationIn, m.inFlightOut, m.inFlightIn,
		m.refusals, m.tlsFailures, m.discovery, m.dnsErrors, m.remoteUp, m.statusEvents, m.notifBacklog, m.notifAge, build, m.funcs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for k, kind := range []string{"srv", "addr"} {
		for e, res := range []string{"hit", "miss", "stale"} {
			m.discoveryHits[k][e] = m.discovery.WithLabelValues(kind, res)
		}
	}
	return m
}

// Registry returns the registry /metrics serves; the process adds its own
// collectors (NATS, certificates) to it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetListed sets the function that tells whether a domain is named by
// the operator (policy.Policy.Listed): only those keep their name in a
// domain label.
func (m *Metrics) SetListed(listed func(domain string) bool) {
	if m == nil || listed == nil {
		return
	}
	m.listed.Store(&listed)
}

// Domain returns the label value of domain: itself when it is listed,
// else OtherDomain.
func (m *Metrics) Domain(domain string) string {
	if (*m.listed.Load())(domain) {
		return domain
	}
	return OtherDomain
}

// Component returns the label value of component: itself when it is one of
// FED_COMPONENTS, else OtherComponent.
func (m *Metrics) Component(component string) string {
	if slices.Contains(m.components, component) {
		return component
	}
	return OtherComponent
}

// Outcome returns the outcome label of a request's error: OutcomeSuccess
// for nil, else the contract label.
func Outcome(err error) string {
	if err == nil {
		return OutcomeSuccess
	}
	return contract.AsError(err).Label
}

// Out records an outbound request to domain: its outcome (err) and how
// long it took.
func (m *Metrics) Out(domain, component string, err error, d time.Duration) {
	if m == nil {
		return
	}
	dom, comp := m.Domain(domain), m.Component(component)
	m.requestsOut.WithLabelValues(dom, comp, Outcome(err)).Inc()
	m.durationOut.WithLabelValues(dom, comp).Observe(d.Seconds())
}

// In records an inbound request from domain ("" when the request failed
// before its origin was known).
func (m *Metrics) In(domain, component string, err error, d time.Duration) {
	if m == nil {
		return
	}
	dom, comp := m.Domain(domain), m.Component(component)
	m.requestsIn.WithLabelValues(dom, comp, Outcome(err)).Inc()
	m.durationIn.WithLabelValues(dom, comp).Observe(d.Seconds())
}

// InFlight adds delta to the requests in flight of direction (Outbound or
// Inbound) with domain.
func (m *Metrics) InFlight(direction, domain string, delta int) {
	if m == nil {
		return
	}
	g := m.inFlightOut
	if direction == Inbound {
		g = m.inFlightIn
	}
	g.WithLabelValues(m.Domain(domain)).Add(float64(delta))
}

// Refused counts a request refused by this backend's own checks
// (direction Outbound or Inbound) with the contract label of its error.
func (m *Metrics) Refused(direction, label string) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(direction, foldLabel(label)).Inc()
}

// TLSFailure counts a failed TLS handshake (direction Outbound or Inbound)
// with its reason (see TLSReason).
func (m *Metrics) TLSFailure(direction, reason string) {
	if m == nil {
		return
	}
	m.tlsFailures.WithLabelValues(direction, reason).Inc()
}

// Discovery results, for DiscoveryLookup.
const (
	LookupHit = iota
	LookupMiss
	LookupStale
)

// DiscoveryLookup counts one discovery lookup: srv (else an address
// lookup) and its result (LookupHit, LookupMiss, LookupStale).
func (m *Metrics) DiscoveryLookup(srv bool, result int) {
	if m == nil || result < 0 || result > LookupStale {
		return
	}
	k := 1
	if srv {
		k = 0
	}
	m.discoveryHits[k][result].Inc()
}

// DNSError counts a failed DNS query (srv, else an address query).
func (m *Metrics) DNSError(srv bool) {
	if m == nil {
		return
	}
	kind := "addr"
	if srv {
		kind = "srv"
	}
	m.dnsErrors.WithLabelValues(kind).Inc()
}

// RemoteUp sets the state of a remote domain (true: reachable).
func (m *Metrics) RemoteUp(domain string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.remoteUp.WithLabelValues(m.Domain(domain)).Set(v)
}

// StatusEvent counts a published remote status event of ce-type typ.
func (m *Metrics) StatusEvent(typ string) {
	if m == nil {
		return
	}
	if typ != contract.TypeRemoteDown && typ != contract.TypeRemoteUp {
		typ = "other"
	}
	m.statusEvents.WithLabelValues(typ).Inc()
}

// NotificationBacklog sets the notifications waiting for domain and the
// age of the oldest (zero when none waits).
func (m *Metrics) NotificationBacklog(domain string, waiting int, oldest time.Duration) {
	if m == nil {
		return
	}
	d := m.Domain(domain)
	m.notifBacklog.WithLabelValues(d).Set(float64(waiting))
	m.notifAge.WithLabelValues(d).Set(oldest.Seconds())
}

// foldLabel keeps the contract's labels and folds anything else.
func foldLabel(label string) string {
	if contract.KnownLabel(label) {
		return label
	}
	return "other"
}

// Build is what the binary knows of its build.
type Build struct {
	Version   string // module version, "(devel)" for a local build
	Revision  string // VCS revision, "unknown" when not recorded
	GoVersion string
}

// ReadBuild returns the build information of the running binary.
func ReadBuild() Build {
	b := Build{Version: "(devel)", Revision: "unknown", GoVersion: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.GoVersion = info.GoVersion
	if v := info.Main.Version; v != "" {
		b.Version = v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			b.Revision = s.Value
		}
	}
	return b
}

// SemVer returns the build's version as SemVer, for the NATS micro service
// protocol: the module version without its "v", or 0.0.0-devel for a
// local build.
func (b Build) SemVer() string {
	v := strings.TrimPrefix(b.Version, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		return "0.0.0-devel"
	}
	return v
}

// TLSReason classifies a failed TLS handshake for
// fedbus_tls_handshake_failures_total: unknown-authority, hostname-mismatch,
// expired, refused (the peer sent an alert: it refused our certificate or
// our parameters), protocol (no common version, cipher or ALPN; not TLS),
// timeout, or other.
func TLSReason(err error) string {
	var (
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		inv   x509.CertificateInvalidError
		alert tls.AlertError
		rh    tls.RecordHeaderError
		op    *net.OpError
		ne    net.Error
	)
	switch {
	case errors.As(err, &ua):
		return "unknown-authority"
	case errors.As(err, &hn):
		return "hostname-mismatch"
	case errors.As(err, &inv):
		if inv.Reason == x509.Expired {
			return "expired"
		}
		return "invalid-certificate"
	case errors.As(err, &alert), errors.As(err, &op) && op.Op == "remote error":
		return "refused"
	case errors.As(err, &rh):
		return "protocol"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	if err != nil {
		return TLSReasonText(err.Error())
	}
	return "other"
}

// TLSReasonText classifies a TLS handshake failure known only by its text
// (net/http logs the ingress's handshake failures, it does not return
// them): the same reasons as TLSReason.
func TLSReasonText(msg string) string {
	switch {
	case strings.Contains(msg, "unknown authority"), strings.Contains(msg, "unknown certificate authority"):
		return "unknown-authority"
	case strings.Contains(msg, "expired"):
		return "expired"
	case strings.Contains(msg, "not valid for"):
		return "hostname-mismatch"
	case strings.Contains(msg, "remote error"):
		return "refused"
	case strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "client sent an HTTP request to an HTTPS server"), strings.Contains(msg, "first record does not look like a TLS handshake"),
		strings.Contains(msg, "protocol version"), strings.Contains(msg, "no application protocol"), strings.Contains(msg, "no cipher suite"):
		return "protocol"
	case strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"):
		return "closed"
	}
	return "other"
}
