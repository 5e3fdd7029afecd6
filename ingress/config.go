package ingress

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// HTTP server limits of the ingress.
const (
	// MaxHeaderBytes bounds the size of a request's headers (HTTP/1.1 and
	// the HTTP/2 header list).
	MaxHeaderBytes = 64 << 10
	// MaxReadFrameSize is the largest HTTP/2 frame the ingress reads (the
	// protocol's default is 16 KiB, Go's 1 MiB): it bounds the read
	// buffer of each connection.
	MaxReadFrameSize = 64 << 10
	// writeByteTimeout closes an HTTP/2 connection on which nothing could
	// be written for that long (a peer that stopped reading).
	writeByteTimeout = 15 * time.Second
	// writeSlack is how much longer than the request deadline a response
	// may take to be written.
	writeSlack = 5 * time.Second
)

// Config is the ingress binary's configuration: the variables of the
// contract (section 5) that every binary reads, plus the ingress's own.
// Start from NewConfig, which holds the defaults.
type Config struct {
	config.Common
	// Addr is the listen address, FED_INGRESS_ADDR.
	Addr string `env:"FED_INGRESS_ADDR" desc:"ingress listen address (host:port)"`
	// MaxBodyBytes is the largest request body accepted, FED_MAX_BODY_BYTES.
	MaxBodyBytes int64 `env:"FED_MAX_BODY_BYTES" desc:"largest request body the ingress accepts, in bytes"`

	// Per-origin limits, applied once the origin is proven (after the
	// certificate's SAN matched its SRV targets), so that nobody can use up
	// another origin's budget. A request over a limit gets
	// too-many-requests (429) with Retry-After. Zero: no limit.

	// OriginRate is the sustained request rate of one origin domain, in
	// requests per second (token bucket), FED_INGRESS_ORIGIN_RATE.
	OriginRate float64 `env:"FED_INGRESS_ORIGIN_RATE" desc:"requests per second one origin domain may send on average (0: no limit)"`
	// OriginBurst is the token bucket's size, FED_INGRESS_ORIGIN_BURST.
	OriginBurst int `env:"FED_INGRESS_ORIGIN_BURST" desc:"requests one origin domain may send at once above FED_INGRESS_ORIGIN_RATE (at least 1 when the rate is limited)"`
	// OriginConcurrency bounds the requests of one origin domain in flight
	// (body upload and component call), FED_INGRESS_ORIGIN_CONCURRENCY.
	OriginConcurrency int `env:"FED_INGRESS_ORIGIN_CONCURRENCY" desc:"requests of one origin domain in flight at once (0: no limit); at least the peers' FED_MAX_IN_FLIGHT_PER_REMOTE"`

	// Per-certificate limits. Under allow-all one certificate can prove
	// many origins (any domain whose SRV record names its host), so the
	// per-origin limits alone would give it as many budgets: these bound
	// what one client certificate (its SHA-256 fingerprint) sends,
	// whatever origins it claims. They apply once the certificate is
	// verified and before any DNS lookup (nobody else can spend its
	// budget: that takes its private key). Zero: no limit.

	// CertRate is the sustained request rate of one client certificate,
	// FED_INGRESS_CERT_RATE.
	CertRate float64 `env:"FED_INGRESS_CERT_RATE" desc:"requests per second one client certificate may send on average, whatever origin domains it proves (0: no limit)"`
	// CertBurst is its token bucket's size, FED_INGRESS_CERT_BURST.
	CertBurst int `env:"FED_INGRESS_CERT_BURST" desc:"requests one client certificate may send at once above FED_INGRESS_CERT_RATE (at least 1 when the rate is limited)"`
	// CertConcurrency bounds the requests of one client certificate in
	// flight, FED_INGRESS_CERT_CONCURRENCY.
	CertConcurrency int `env:"FED_INGRESS_CERT_CONCURRENCY" desc:"requests of one client certificate in flight at once, whatever origin domains it proves (0: no limit)"`
	// AuthFailureRate and AuthFailureBurst bound the failed
	// authentications of one client certificate (discovery of the claimed
	// origin failed, or the certificate is not one of its SRV targets):
	// each costs DNS lookups, so once its burst is spent, its requests
	// get too-many-requests before any lookup until the bucket refills.
	AuthFailureRate  float64 `env:"FED_INGRESS_AUTH_FAILURE_RATE" desc:"failed authentications (each costs DNS lookups) per second one client certificate may cause on average; beyond, its requests get too-many-requests before any lookup (0: no limit)"`
	AuthFailureBurst int     `env:"FED_INGRESS_AUTH_FAILURE_BURST" desc:"failed authentications one client certificate may cause at once above FED_INGRESS_AUTH_FAILURE_RATE"`
	// MaxStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one
	// connection may have open at once, FED_INGRESS_MAX_STREAMS.
	MaxStreams int `env:"FED_INGRESS_MAX_STREAMS" desc:"HTTP/2 streams (requests) one connection may have open at once"`
	// ReadHeaderTimeout bounds the TLS handshake and reading a request's
	// headers, FED_INGRESS_READ_HEADER_TIMEOUT; a new connection that has
	// not delivered a complete request after twice this time is closed
	// (HTTP/2 included, which the server's header timeout does not cover).
	ReadHeaderTimeout time.Duration `env:"FED_INGRESS_READ_HEADER_TIMEOUT" desc:"time a client has for the TLS handshake and for a request's headers (a new connection: twice this for its first request); slower connections are closed"`
	// IdleTimeout closes connections without requests for that long,
	// FED_INGRESS_IDLE_TIMEOUT.
	IdleTimeout time.Duration `env:"FED_INGRESS_IDLE_TIMEOUT" desc:"connections without a request for this long are closed"`

	// Notifications (section 6).

	// InboxStream is the stream of inbound notifications (fed.inbox.>),
	// created when missing, FED_INBOX_STREAM; its marks are in the
	// key-value bucket <InboxStream>_MARKS.
	InboxStream string `env:"FED_INBOX_STREAM" desc:"JetStream stream of inbound notifications (fed.inbox.>), created when missing; the bucket <name>_MARKS too"`
	// InboxMaxBytes bounds the inbox when the ingress creates it; a full
	// inbox answers 507 notification-store-full (the sender retries).
	InboxMaxBytes int64 `env:"FED_INBOX_MAX_BYTES" desc:"bytes the inbound notification stream may hold when the ingress creates it; when full, notifications are refused with 507 and their senders retry (0: the server's limit)"`
	// InboxDuplicates is the inbox's deduplication window of
	// <origin>/<ce-id>, FED_INBOX_DUPLICATE_WINDOW.
	InboxDuplicates time.Duration `env:"FED_INBOX_DUPLICATE_WINDOW" desc:"how long the inbound stream remembers <origin>/<notification id> to recognise a notification sent again (fedbus senders are recognised after it too, by their sequence)"`
	// BatchMax and BatchMaxBytes bound a batch of notifications from a
	// fedbus sender; the ingress announces them on its answers.
	BatchMax      int   `env:"FED_INGRESS_BATCH_MAX" desc:"notifications a fedbus sender may send in one batch request (announced to senders; 0: no batches)"`
	BatchMaxBytes int64 `env:"FED_INGRESS_BATCH_MAX_BYTES" desc:"largest body of a batch request"`
}

// NewConfig returns the ingress's configuration with every default: the
// one place they are written.
func NewConfig() Config {
	return Config{
		Common:            config.DefaultCommon(),
		Addr:              ":8443",
		MaxBodyBytes:      1 << 20,
		OriginRate:        1000,
		OriginBurst:       2000,
		OriginConcurrency: 512,
		CertRate:          2000,
		CertBurst:         4000,
		CertConcurrency:   1024,
		AuthFailureRate:   1,
		AuthFailureBurst:  20,
		MaxStreams:        250,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		InboxStream:       contract.DefaultInboxStream,
		InboxMaxBytes:     1 << 30,
		InboxDuplicates:   2 * time.Minute,
		BatchMax:          1000,
		BatchMaxBytes:     4 << 20,
	}
}

// Validate reports every problem of the configuration at once (joined with
// errors.Join): those of config.Common.Validate and those of the ingress's
// own fields. It changes nothing.
func (c *Config) Validate() error {
	return errors.Join(c.Common.Validate(), checkAddr(c.Addr), c.validateOwn())
}

// validateOwn checks the ingress's own fields.
func (c *Config) validateOwn() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_BODY_BYTES must be positive, got %d", c.MaxBodyBytes))
	}
	errs = append(errs, checkProtection(c))
	if c.MaxStreams <= 0 {
		errs = append(errs, fmt.Errorf("FED_INGRESS_MAX_STREAMS must be positive, got %d", c.MaxStreams))
	}
	if c.ReadHeaderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("FED_INGRESS_READ_HEADER_TIMEOUT must be positive, got %v", c.ReadHeaderTimeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("FED_INGRESS_IDLE_TIMEOUT must be positive, got %v", c.IdleTimeout))
	}
	if !notify.ValidName(c.InboxStream) {
		errs = append(errs, fmt.Errorf("FED_INBOX_STREAM %q is not [A-Za-z0-9_-]{1,128}", c.InboxStream))
	}
	if c.InboxMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("FED_INBOX_MAX_BYTES must not be negative, got %d", c.InboxMaxBytes))
	}
	if c.InboxDuplicates <= 0 {
		errs = append(errs, fmt.Errorf("FED_INBOX_DUPLICATE_WINDOW must be positive, got %v", c.InboxDuplicates))
	}
	if c.BatchMax < 0 || c.BatchMax > 10000 {
		errs = append(errs, fmt.Errorf("FED_INGRESS_BATCH_MAX must be 0 to 10000, got %d", c.BatchMax))
	}
	if c.BatchMaxBytes < 1024 {
		errs = append(errs, fmt.Errorf("FED_INGRESS_BATCH_MAX_BYTES must be at least 1024, got %d", c.BatchMaxBytes))
	}
	return errors.Join(errs...)
}

// checkProtection checks the per-origin and per-certificate limits, which
// New checks as well: none negative or not a number, a burst of at least 1
// when the rate is limited.
func checkProtection(c *Config) error {
	return errors.Join(
		checkBucket("FED_INGRESS_ORIGIN", c.OriginRate, c.OriginBurst, c.OriginConcurrency),
		checkBucket("FED_INGRESS_CERT", c.CertRate, c.CertBurst, c.CertConcurrency),
		checkBucket("FED_INGRESS_AUTH_FAILURE", c.AuthFailureRate, c.AuthFailureBurst, 0),
	)
}

// checkBucket checks the variables <prefix>_RATE, _BURST and (when
// concurrency is one) _CONCURRENCY.
func checkBucket(prefix string, rate float64, burst, concurrency int) error {
	var errs []error
	switch {
	case math.IsNaN(rate) || math.IsInf(rate, 0) || rate < 0:
		errs = append(errs, fmt.Errorf("%s_RATE must be a number, 0 or more, got %v", prefix, rate))
	case rate > 0 && burst < 1:
		errs = append(errs, fmt.Errorf("%s_BURST must be at least 1 when %s_RATE is set, got %d", prefix, prefix, burst))
	case burst < 0:
		errs = append(errs, fmt.Errorf("%s_BURST must not be negative, got %d", prefix, burst))
	}
	if concurrency < 0 {
		errs = append(errs, fmt.Errorf("%s_CONCURRENCY must not be negative, got %d", prefix, concurrency))
	}
	return errors.Join(errs...)
}

// checkAddr checks FED_INGRESS_ADDR: host:port with a numeric port.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("FED_INGRESS_ADDR %q is not host:port: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("FED_INGRESS_ADDR %q: port is not a number 0-65535", addr)
	}
	return nil
}
