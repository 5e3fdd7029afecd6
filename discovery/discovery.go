package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// ServicePrefix is the owner-name prefix of a domain's federation SRV
// record: the record of b.example.com is
// _wire-server-federator._tcp.b.example.com.
const ServicePrefix = "_wire-server-federator._tcp."

// Sentinel errors. Errors returned by the Resolver wrap one of them (or a
// context error); match them with
// errors.Is.
var (
	// ErrNotFound: the domain has no federation SRV record (NXDOMAIN or an
	// empty answer). Contract label invalid-domain.
	ErrNotFound = errors.New("no federation SRV record")
	// ErrServiceUnavailable: the SRV record is the single target ".", the
	// domain decidedly does not federate (RFC 2782). Contract label
	// invalid-domain.
	ErrServiceUnavailable = errors.New("federation service decidedly not available (SRV target \".\")")
	// ErrLookup: any other DNS failure (SERVFAIL, REFUSED, every server
	// timed out or unreachable, a malformed answer) with no usable stale
	// answer. Contract label discovery-failure.
	ErrLookup = errors.New("DNS lookup failed")
	// ErrPrivateTarget: the host has addresses, but all of them are in a
	// refused class (see RefusedAddr) and AllowPrivate is off. Contract
	// label federation-denied.
	ErrPrivateTarget = errors.New("all addresses are loopback, private, link-local or otherwise refused")
	// ErrNoAddress: the host has no A or AAAA record, or is not a valid
	// host name.
	ErrNoAddress = errors.New("host has no address")
	// ErrInvalidDomain: the domain is not a valid DNS name of a backend
	// (see normalizeDomain); nothing was asked. Contract label
	// domain-parse-error.
	ErrInvalidDomain = errors.New("invalid domain")
	// ErrInsecure: RequireDNSSEC is set and the SRV answer did not carry
	// the AD (authentic data) flag of a validating resolver, so it can
	// neither prove an identity nor be trusted to say where to send a
	// request. Contract label: authentication-failure for the ingress's
	// identity check (HasTarget: the lookup worked, the peer's claim is
	// not proven); discovery-failure for the federator's outbound
	// discovery (SRV, AppendSRV: no endpoint we may trust was found).
	ErrInsecure = errors.New("SRV answer not validated by DNSSEC (no AD flag)")
)

// errClosed is returned for lookups that need DNS after Close.
var errClosed = fmt.Errorf("%w: resolver closed", ErrLookup)

// ednsSize is the UDP payload size advertised in EDNS0 (DNS flag day 2020).
const ednsSize = 1232

// Defaults of Config.
const (
	DefaultQueryTimeout   = 2 * time.Second
	DefaultMinTTL         = 5 * time.Second
	DefaultMaxTTL         = time.Hour
	DefaultNegativeMinTTL = 5 * time.Second
	DefaultNegativeMaxTTL = 5 * time.Minute
	DefaultStaleFor       = time.Hour
	DefaultStaleRetry     = 30 * time.Second
	DefaultDownMin        = time.Second
	DefaultDownMax        = time.Minute
	DefaultMaxEntries     = 50000
	DefaultIdentityStale  = 30 * time.Second
)

// Target is one SRV record of a domain: the federation endpoint
// Host:Port. Host is lower case without the trailing dot.
type Target struct {
	Host     string
	Port     uint16
	Priority uint16
	Weight   uint16
}

// Config configures a Resolver. The zero value of a field selects its
// default.
type Config struct {
	// Servers are the DNS servers ("host:port"; a bare host means port 53)
	// tried in order. Empty: the nameservers of /etc/resolv.conf.
	Servers []string
	// QueryTimeout bounds one query to one server (default 2s). A
	// truncated UDP answer's TCP retry gets its own QueryTimeout.
	QueryTimeout time.Duration
	// MinTTL and MaxTTL clamp the TTL of positive answers (default 5s and
	// 1h).
	MinTTL, MaxTTL time.Duration
	// NegativeMinTTL and NegativeMaxTTL clamp how long negative answers
	// (NXDOMAIN, empty answer) are cached: the smaller of the SOA's TTL and
	// its MINIMUM field (RFC 2308), 5s and 5m by default.
	NegativeMinTTL, NegativeMaxTTL time.Duration
	// StaleFor is how long after its expiry a positive answer may still be
	// served while the DNS servers fail (RFC 8767), default 1h; negative
	// disables serve-stale.
	StaleFor time.Duration
	// StaleRetry is how often the DNS servers are asked again while a
	// stale answer is served (RFC 8767 failure recheck), default 30s.
	StaleRetry time.Duration
	// DownMin and DownMax bound how long a target reported with
	// ReportFailure stays down: DownMin after the first failure, doubling
	// with each further failure up to DownMax, jittered by ±25% (defaults
	// 1s and 60s).
	DownMin, DownMax time.Duration
	// MaxEntries bounds each of the two caches (SRV answers, address
	// answers), default 50,000: when one is full, the least recently used
	// eighth of its entries is dropped. Names come from peers (origin
	// domains) and components (targets), so nothing else bounds them.
	MaxEntries int
	// IdentityStaleFor is how long after its expiry an SRV answer may still
	// prove an identity (HasTarget) while the DNS servers fail, default
	// 30s; negative: never. It is short because whoever can make our DNS
	// fail could otherwise keep an identity alive that its domain has
	// withdrawn (StaleFor, for discovering where to send requests, is
	// long: the TLS certificate of the target still authenticates it).
	IdentityStaleFor time.Duration
	// AllowPrivate keeps addresses of refused classes (loopback, private,
	// link-local, ...) in Addrs' results: FED_ALLOW_PRIVATE_TARGETS.
	AllowPrivate bool
	// RequireDNSSEC (FED_REQUIRE_DNSSEC) makes SRV, AppendSRV and
	// HasTarget trust only SRV answers that a validating resolver marked
	// authentic (the AD flag): queries then set the DO bit (and AD) in
	// EDNS0, the flag is cached with the answer, and the three fail with
	// ErrInsecure for an answer without it. The servers must be validating
	// resolvers reached over a trusted path (the AD flag itself is not
	// signed). Address lookups (Addrs) do not look at the flag: the TLS
	// certificate of the SRV target is what authenticates the address.
	RequireDNSSEC bool
	// Logger receives the serve-stale warnings (required).
	Logger *slog.Logger
	// Observer, when set, is told of every lookup's cache result and of
	// every failed DNS query (fedbus counts them as metrics).
	Observer Observer
	// Now is the clock of TTLs, serve-stale and down marking; nil means
	// time.Now. Tests use a fake clock. It must be safe for concurrent use.
	Now func() time.Time
}

// Result is how a lookup was answered, for an Observer.
type Result int

const (
	// Hit: from a fresh cached answer.
	Hit Result = iota
	// Miss: the DNS servers were asked (or a query in flight was joined).
	Miss
	// Stale: an expired answer was served because DNS failed (RFC 8767).
	Stale
)

// Observer is told what the Resolver does. Its methods are called on the
// lookup path: they must be fast and safe for concurrent use.
type Observer interface {
	// Lookup is one lookup of an SRV record (srv) or of a host's
	// addresses, with its result.
	Lookup(srv bool, r Result)
	// QueryFailed is a resolution that failed at the DNS servers
	// (timeout, SERVFAIL, refused, unreachable), whatever was served
	// instead.
	QueryFailed(srv bool)
}

// nopObserver is the Observer of a Resolver without one.
type nopObserver struct{}

func (nopObserver) Lookup(bool, Result) {}
func (nopObserver) QueryFailed(bool)    {}

// Resolver discovers federation endpoints. It is safe for concurrent use.
// Close stops its goroutines (clock, background refreshes).
type Resolver struct {
	cfg     Config
	servers []string
	log     *slog.Logger
	udp     *dns.Client
	tcp     *dns.Client

	// Clock: times are mono, nanoseconds since base. fake is Config.Now;
	// without it, coarse is a monotonic clock updated every coarseTick by
	// a goroutine, read by the lookup hot path instead of time.Now (which
	// costs up to 200ns on some virtual machines).
	base    time.Time
	fake    func() time.Time
	coarse  atomic.Int64
	stopped atomic.Bool // Close was called: the coarse clock stopped

	srv  *cache // key: normalized domain
	addr *cache // key: normalized host name

	done   chan struct{} // closed by Close: stops the coarse clock
	mu     sync.Mutex    // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup // every goroutine started by the Resolver

	downMu sync.RWMutex
	down   map[downKey]*downState
	downN  atomic.Int32 // len(down), read without the lock by the hot path
}

// New returns a Resolver for cfg. It fails when a server address or a
// duration is invalid, or when Servers is empty and /etc/resolv.conf
// cannot be read. The Resolver runs a goroutine (its clock) until Close.
func New(cfg Config) (*Resolver, error) {
	setDefault(&cfg.QueryTimeout, DefaultQueryTimeout)
	setDefault(&cfg.MinTTL, DefaultMinTTL)
	setDefault(&cfg.MaxTTL, DefaultMaxTTL)
	setDefault(&cfg.NegativeMinTTL, DefaultNegativeMinTTL)
	setDefault(&cfg.NegativeMaxTTL, DefaultNegativeMaxTTL)
	setDefault(&cfg.StaleFor, DefaultStaleFor)
	setDefault(&cfg.StaleRetry, DefaultStaleRetry)
	setDefault(&cfg.DownMin, DefaultDownMin)
	setDefault(&cfg.DownMax, DefaultDownMax)
	setDefault(&cfg.IdentityStaleFor, DefaultIdentityStale)
	if cfg.StaleFor < 0 {
		cfg.StaleFor = 0
	}
	if cfg.IdentityStaleFor < 0 {
		cfg.IdentityStaleFor = 0
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("discovery: negative MaxEntries %d", cfg.MaxEntries)
	}
	if cfg.Logger == nil {
		return nil, errors.New("discovery: no logger")
	}
	for _, c := range []struct {
		name     string
		min, max time.Duration
	}{
		{"MinTTL/MaxTTL", cfg.MinTTL, cfg.MaxTTL},
		{"NegativeMinTTL/NegativeMaxTTL", cfg.NegativeMinTTL, cfg.NegativeMaxTTL},
		{"DownMin/DownMax", cfg.DownMin, cfg.DownMax},
	} {
		if c.min < 0 || c.max < c.min {
			return nil, fmt.Errorf("discovery: invalid %s: %v, %v", c.name, c.min, c.max)
		}
	}
	if cfg.QueryTimeout < 0 || cfg.StaleRetry < 0 {
		return nil, errors.New("discovery: negative QueryTimeout or StaleRetry")
	}

	servers, err := serverList(cfg.Servers)
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		cfg:     cfg,
		servers: servers,
		log:     cfg.Logger,
		fake:    cfg.Now,
		udp:     &dns.Client{Net: "udp", Timeout: cfg.QueryTimeout, UDPSize: ednsSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: cfg.QueryTimeout},
		srv:     newCache(kindSRV, cfg.MaxEntries),
		addr:    newCache(kindAddr, cfg.MaxEntries),
		down:    make(map[downKey]*downState),
		done:    make(chan struct{}),
	}
	if r.cfg.Observer == nil {
		r.cfg.Observer = nopObserver{}
	}
	if r.fake != nil {
		r.base = r.fake()
	} else {
		r.base = time.Now()
		r.wg.Add(1)
		go r.tick()
	}
	return r, nil
}

// mono is a point in time of a Resolver: nanoseconds since its base.
type mono int64

func (m mono) add(d time.Duration) mono { return m + mono(d) }

// coarseTick is the resolution of the hot path's clock.
const coarseTick = 50 * time.Millisecond

// now returns the current time.
func (r *Resolver) now() mono {
	if r.fake != nil {
		return mono(r.fake().Sub(r.base))
	}
	return mono(time.Since(r.base))
}

// nowFast returns the current time, up to coarseTick late: cheap enough
// for every cache hit. Entries are at most that much older than their TTL
// when they expire.
func (r *Resolver) nowFast() mono {
	if r.fake != nil || r.stopped.Load() {
		return r.now()
	}
	return mono(r.coarse.Load())
}

// tick updates the coarse clock until Close.
func (r *Resolver) tick() {
	defer r.wg.Done()
	t := time.NewTicker(coarseTick)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			r.coarse.Store(int64(time.Since(r.base)))
		}
	}
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// serverList returns the "host:port" addresses of the DNS servers: cfg's,
// or /etc/resolv.conf's when cfg has none.
func serverList(cfg []string) ([]string, error) {
	if len(cfg) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("discovery: no DNS server configured and /etc/resolv.conf unusable: %w", err)
		}
		out := make([]string, 0, len(cc.Servers))
		for _, s := range cc.Servers {
			out = append(out, net.JoinHostPort(s, cc.Port))
		}
		if len(out) == 0 {
			return nil, errors.New("discovery: no DNS server configured and none in /etc/resolv.conf")
		}
		return out, nil
	}
	out := make([]string, 0, len(cfg))
	for _, s := range cfg {
		s = strings.TrimSpace(s)
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			// A bare host or IP address (IPv6 possibly in brackets).
			host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
		}
		if p, perr := strconv.ParseUint(port, 10, 16); host == "" || perr != nil || p == 0 {
			return nil, fmt.Errorf("discovery: invalid DNS server address %q", s)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

// Close stops the background refreshes and in-flight queries and waits for
// their goroutines. Cached answers are still served afterwards; lookups
// that need DNS fail with ErrLookup. Close is idempotent.
func (r *Resolver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.stopped.Store(true)
	close(r.done)
	// No flight starts any more (closed is set); cancel those in flight.
	r.srv.cancelFlights()
	r.addr.cancelFlights()
	r.wg.Wait()
	return nil
}

// SRV returns the targets of _wire-server-federator._tcp.<domain> in RFC
// 2782 order: lowest priority first, within one priority a weighted random
// order (weight 0 records get a very small chance to come first). Targets
// currently marked down (ReportFailure) are moved after the healthy ones,
// never dropped.
//
// The error wraps ErrNotFound, ErrServiceUnavailable or ErrLookup, or
// ctx.Err() when ctx ends before the DNS servers answer and no expired
// answer can be served instead; with RequireDNSSEC, an answer without the
// AD flag is ErrInsecure (no targets are returned: the federator must not
// send anything to them). An invalid domain gives ErrInvalidDomain. Errors start with "discover <domain>: ".
func (r *Resolver) SRV(ctx context.Context, domain string) ([]Target, error) {
	ts, err := r.AppendSRV(ctx, nil, domain)
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// AppendSRV is SRV appending the targets to dst. On a cache hit it does not
// allocate when dst has the capacity. On error dst is returned unchanged.
func (r *Resolver) AppendSRV(ctx context.Context, dst []Target, domain string) ([]Target, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return dst, err
	}
	e, err := r.lookup(ctx, r.srv, d)
	if err != nil {
		return dst, fmt.Errorf("discover %s: %w", d, err)
	}
	if e.neg != nil {
		return dst, fmt.Errorf("discover %s: %w", d, e.neg)
	}
	if r.cfg.RequireDNSSEC && !e.authentic {
		return dst, fmt.Errorf("discover %s: %w", d, ErrInsecure)
	}
	return r.appendTargets(dst, e), nil
}

// HasTarget reports whether sanName, a DNS name of a client certificate,
// is one of the SRV targets of domain: compared case-insensitively, a
// trailing dot ignored, and a left-most label "*" matching exactly one
// left-most label of a target ("*.b-infra.test" matches "fed.b-infra.test",
// not "x.fed.b-infra.test" nor "b-infra.test"). A discovery failure is
// returned as the error (with false); with RequireDNSSEC, an SRV answer
// without the AD flag is the error ErrInsecure, whatever sanName. An
// answer served stale (the DNS servers fail) proves nothing once it
// expired more than IdentityStaleFor ago: ErrLookup. It does not allocate
// on a cache hit.
func (r *Resolver) HasTarget(ctx context.Context, domain, sanName string) (bool, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return false, err
	}
	e, err := r.lookup(ctx, r.srv, d)
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", d, err)
	}
	if e.neg != nil {
		return false, fmt.Errorf("discover %s: %w", d, e.neg)
	}
	if r.cfg.RequireDNSSEC && !e.authentic {
		return false, fmt.Errorf("discover %s: %w", d, ErrInsecure)
	}
	if r.nowFast() >= e.expires {
		// Served stale: the DNS servers fail. An identity may rest on it
		// for IdentityStaleFor only.
		if age := time.Duration(r.now() - e.expires); age > r.cfg.IdentityStaleFor {
			return false, fmt.Errorf("discover %s: %w: the SRV answer expired %v ago and cannot be renewed; it proves an identity for %v past its expiry only",
				d, ErrLookup, age.Round(time.Millisecond), r.cfg.IdentityStaleFor)
		}
	}
	name := strings.TrimSuffix(sanName, ".")
	for i := range e.targets {
		if matchName(name, e.targets[i].Host) {
			return true, nil
		}
	}
	return false, nil
}

// matchName reports whether the certificate name pattern matches host
// (see HasTarget).
func matchName(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		if rest == "" || len(host) <= len(rest)+1 {
			return false
		}
		cut := len(host) - len(rest) - 1 // index of the dot after the left-most label
		return host[cut] == '.' &&
			strings.IndexByte(host[:cut], '.') < 0 &&
			strings.EqualFold(host[cut+1:], rest)
	}
	return pattern != "" && strings.EqualFold(pattern, host)
}

// Addrs returns the addresses of host (A and AAAA records through the same
// servers and cache rules as SRV), without those of refused classes (see
// RefusedAddr) unless AllowPrivate. An IP address literal is returned as
// it is (or refused). The error wraps ErrPrivateTarget when every address
// was refused, ErrNoAddress when host has none.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	as, err := r.AppendAddrs(ctx, nil, host)
	if err != nil {
		return nil, err
	}
	return as, nil
}

// AppendAddrs is Addrs appending to dst. On a cache hit it does not
// allocate when dst has the capacity. On error dst is returned unchanged.
func (r *Resolver) AppendAddrs(ctx context.Context, dst []netip.Addr, host string) ([]netip.Addr, error) {
	if mayBeIP(host) {
		if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
			a = a.WithZone("")
			if !r.cfg.AllowPrivate && RefusedAddr(a) {
				return dst, fmt.Errorf("resolve %s: %w", host, ErrPrivateTarget)
			}
			return append(dst, a), nil
		}
	}
	h, ok := normalizeHost(host)
	if !ok {
		return dst, fmt.Errorf("resolve %q: invalid host name: %w", host, ErrNoAddress)
	}
	e, err := r.lookup(ctx, r.addr, h)
	if err != nil {
		return dst, fmt.Errorf("resolve %s: %w", h, err)
	}
	if e.neg != nil {
		return dst, fmt.Errorf("resolve %s: %w", h, e.neg)
	}
	if len(e.addrs) == 0 {
		return dst, fmt.Errorf("resolve %s: %d addresses: %w", h, e.refused, ErrPrivateTarget)
	}
	return append(dst, e.addrs...), nil
}

// mayBeIP reports whether host may be an IP address literal: it has a
// colon or ends with a digit (no top-level domain is numeric). It keeps
// the failing (allocating) netip.ParseAddr off the path of host names.
func mayBeIP(host string) bool {
	if host == "" {
		return false
	}
	last := host[len(host)-1]
	return strings.IndexByte(host, ':') >= 0 || last >= '0' && last <= '9' || last == ']'
}

// normalizeHost returns host lower case without a trailing dot (non-ASCII
// as IDNA punycode), and whether it is a valid host name: labels of
// [a-z0-9_-], 1 to 63 characters, at most 253 in all. It does not
// allocate for an already canonical name.
func normalizeHost(host string) (string, bool) {
	return normalizeName(strings.TrimSuffix(host, "."), true)
}

// normalizeDomain returns the canonical form of a backend domain: lower
// case, non-ASCII labels as IDNA punycode, labels of [a-z0-9-], 1 to 63
// characters, at least two labels, at most 253 characters, no trailing
// dot. Anything else wraps ErrInvalidDomain. Callers normally pass
// domains that the contract's rule already made canonical; this check
// keeps a bad name from ever becoming a DNS query.
func normalizeDomain(domain string) (string, error) {
	d, ok := normalizeName(domain, false)
	if !ok || strings.IndexByte(d, '.') < 0 {
		return "", fmt.Errorf("discover %s: %w", truncate(domain, 64), ErrInvalidDomain)
	}
	return d, nil
}

// normalizeName lower-cases name (non-ASCII as IDNA punycode) and checks
// its labels: 1 to 63 characters of [a-z0-9-] (and "_" when underscore),
// at most 253 in all.
func normalizeName(name string, underscore bool) (string, bool) {
	h := name
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			if len(h) > 4*253 || !utf8.ValidString(h) {
				return "", false
			}
			p, err := idna.Lookup.ToASCII(h)
			if err != nil {
				return "", false
			}
			h = p
			break
		}
	}
	h = strings.ToLower(h) // no allocation when already lower case
	if len(h) == 0 || len(h) > 253 {
		return "", false
	}
	start := 0
	for i := 0; i <= len(h); i++ {
		if i < len(h) && h[i] != '.' {
			c := h[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || underscore && c == '_') {
				return "", false
			}
			continue
		}
		if n := i - start; n == 0 || n > 63 {
			return "", false
		}
		start = i + 1
	}
	return h, true
}

// truncate bounds a caller-supplied name in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Ping asks the DNS servers, bypassing the cache, for the SRV record of
// domain and returns nil when one of them answers (NXDOMAIN and an empty
// answer included): the servers are up. It is the readiness check of
// FED_DNS_SERVER.
func (r *Resolver) Ping(ctx context.Context, domain string) error {
	d, err := normalizeDomain(domain)
	if err != nil {
		return err
	}
	if _, err := r.exchange(ctx, ServicePrefix+d+".", dns.TypeSRV); err != nil {
		return lookupError(ServicePrefix+d, "SRV", err)
	}
	return nil
}
