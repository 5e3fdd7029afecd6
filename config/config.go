// Package config holds the configuration of the contract (section 5) that
// every fedbus binary reads from the environment, its validation and the
// listing printed by -h.
package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/contract"
)

// Common is the part of the configuration that the federator and the
// ingress share. Tags: env (go-envconfig) and desc (for -h). Defaults are
// not in the tags: DefaultCommon holds them, written once.
type Common struct {
	Domain              string        `env:"FED_DOMAIN" desc:"this backend's domain (required)"`
	NATSURL             string        `env:"FED_NATS_URL" secret:"userinfo" desc:"NATS server(s), comma-separated"`
	NATSInOrder         bool          `env:"FED_NATS_IN_ORDER" desc:"connect to the servers of FED_NATS_URL in the order given (the first first, the others on failover) instead of in random order: places a process on the server of its zone"`
	SubjectPrefix       string        `env:"FED_SUBJECT_PREFIX" desc:"first subject token"`
	DNSServer           string        `env:"FED_DNS_SERVER" desc:"host:port of the resolver(s) for SRV and address lookups, comma-separated; system resolver if unset"`
	Strategy            string        `env:"FED_STRATEGY" desc:"allow-none, allow-all or allow-list"`
	AllowList           []string      `env:"FED_ALLOW_LIST" desc:"comma-separated domains for allow-list"`
	TLSCert             string        `env:"FED_TLS_CERT" desc:"this backend's certificate chain, PEM file (required)"`
	TLSKey              string        `env:"FED_TLS_KEY" desc:"this backend's private key, PEM file (required)"`
	TLSCA               string        `env:"FED_TLS_CA" desc:"PEM bundle of CAs trusted for remote backends (required)"`
	Components          []string      `env:"FED_COMPONENTS" desc:"components federated, in both directions"`
	RequestTimeout      time.Duration `env:"FED_REQUEST_TIMEOUT" desc:"deadline of one federated request"`
	AllowPrivateTargets bool          `env:"FED_ALLOW_PRIVATE_TARGETS" desc:"allow targets on loopback, private or link-local addresses (tests and local demos only)"`
	NATS                NATSAuth
	KVBucket            string        `env:"FED_KV_BUCKET" desc:"JetStream key-value bucket with the dynamic federation config (remote domains and their rules), the one fedctl manages; set it empty for the static configuration only"`
	JetStreamReplicas   int           `env:"FED_JETSTREAM_REPLICAS" desc:"replicas of every JetStream asset fedbus creates (the config bucket through fedctl, the object bucket, streams): 1 on a single NATS server, 3 on a NATS cluster"`
	TLSReloadInterval   time.Duration `env:"FED_TLS_RELOAD_INTERVAL" desc:"how often the certificate, key and CA files are checked for changes"`
	TLSMinVersion       string        `env:"FED_TLS_MIN_VERSION" desc:"lowest TLS version for federation traffic: 1.3 or 1.2"`
	ShutdownTimeout     time.Duration `env:"FED_SHUTDOWN_TIMEOUT" desc:"how long a stopping process waits for requests in flight"`
	LogFormat           string        `env:"FED_LOG_FORMAT" desc:"json or text"`
	LogLevel            string        `env:"FED_LOG_LEVEL" desc:"debug, info, warn or error"`
	Identity            string        `env:"FED_IDENTITY" desc:"how the ingress ties a client certificate to its origin domain: srv (a DNS SAN is an SRV target of the origin) or srv-or-domain (also a DNS SAN equal to the origin domain)"`
	PprofAddr           string        `env:"FED_PPROF_ADDR" desc:"address of a debug listener serving Go's profiles (/debug/pprof/) on plain HTTP, e.g. 127.0.0.1:6060; empty: none. Never expose it"`
	RequireDNSSEC       bool          `env:"FED_REQUIRE_DNSSEC" desc:"trust only SRV answers that the resolver validated with DNSSEC (AD flag), for the ingress's identity check and the federator's discovery of remotes; needs a validating resolver on a trusted path"`
	IdentityStaleGrace  time.Duration `env:"FED_IDENTITY_STALE_GRACE" desc:"while the DNS servers fail, how long past its expiry an origin's SRV answer still proves a client certificate's identity (0: not at all); discovery of remotes keeps serving stale answers for an hour"`
	DNSCacheEntries     int           `env:"FED_DNS_CACHE_ENTRIES" desc:"DNS answers kept, per kind (SRV, addresses); the least recently used go first"`
	// Large and streamed bodies (contract section 8).
	ObjectBucket       string        `env:"FED_OBJECT_BUCKET" desc:"JetStream object store bucket of large and streamed bodies (created by the federator when missing)"`
	ObjectTTL          time.Duration `env:"FED_OBJECT_TTL" desc:"objects of FED_OBJECT_BUCKET expire after this time (when fedbus creates the bucket; at least 100ms)"`
	MaxObjectBytes     int64         `env:"FED_MAX_OBJECT_BYTES" desc:"largest streamed body, in bytes; a larger one fails with payload-too-large"`
	MaxObjectTransfers int           `env:"FED_MAX_OBJECT_TRANSFERS" desc:"streamed bodies one process moves at once (into or out of the object store); more wait for a free slot until their deadline"`
	OpsAddr            string        `env:"FED_OPS_ADDR" desc:"address of the operations endpoints (plain HTTP: /livez, /readyz, /metrics); empty turns them off"`
}

// Identity modes (FED_IDENTITY).
const (
	// IdentitySRV: one DNS SAN of the client certificate matches one SRV
	// target of the origin domain (the contract's rule).
	IdentitySRV = "srv"
	// IdentitySRVOrDomain: as IdentitySRV, or one DNS SAN is the origin
	// domain itself (exactly, no wildcard).
	IdentitySRVOrDomain = "srv-or-domain"
)

// DefaultBucket is the default FED_KV_BUCKET of the services and of
// fedctl: the key-value bucket of the dynamic federation config.
const DefaultBucket = "fedbus"

// DefaultCommon returns the defaults of the common configuration: the
// contract's (section 5) and fedbus's own. It is the one place each default
// is written; -h prints it.
func DefaultCommon() Common {
	return Common{
		NATSURL:            "nats://127.0.0.1:4222",
		SubjectPrefix:      contract.DefaultPrefix,
		Strategy:           contract.AllowNone,
		Components:         contract.DefaultComponents(),
		KVBucket:           DefaultBucket,
		RequestTimeout:     10 * time.Second,
		TLSReloadInterval:  2 * time.Second,
		TLSMinVersion:      "1.3",
		ShutdownTimeout:    30 * time.Second,
		LogFormat:          "json",
		LogLevel:           "info",
		Identity:           IdentitySRV,
		IdentityStaleGrace: 30 * time.Second,
		DNSCacheEntries:    50000,
		ObjectBucket:       contract.DefaultObjectBucket,
		ObjectTTL:          contract.DefaultObjectTTL,
		MaxObjectBytes:     contract.DefaultMaxObjectBytes,
		MaxObjectTransfers: 32,
		OpsAddr:            ":9090",
		JetStreamReplicas:  1,
	}
}

// Validate reports every problem of the common configuration at once. It
// changes nothing (Normalize makes the domains canonical).
func (c *Common) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Domain == "" {
		add("FED_DOMAIN is required")
	} else if _, err := contract.NormalizeDomain(c.Domain); err != nil {
		add("FED_DOMAIN %q is not a valid domain", c.Domain)
	}
	if c.NATSURL == "" {
		add("FED_NATS_URL is empty")
	}
	for _, s := range c.DNSServers() {
		if _, _, err := net.SplitHostPort(s); err != nil {
			add("FED_DNS_SERVER %q is not host:port", s)
		}
	}
	if c.DNSCacheEntries <= 0 {
		add("FED_DNS_CACHE_ENTRIES must be positive")
	}
	if c.IdentityStaleGrace < 0 {
		add("FED_IDENTITY_STALE_GRACE must not be negative")
	}
	if !contract.ValidStrategy(c.Strategy) {
		add("FED_STRATEGY %q is not allow-none, allow-all or allow-list", c.Strategy)
	}
	for _, d := range c.AllowList {
		if _, err := contract.NormalizeDomain(strings.TrimSpace(d)); err != nil {
			add("FED_ALLOW_LIST entry %q is not a valid domain", d)
		}
	}
	if err := c.checkStrategyList(); err != nil {
		errs = append(errs, err)
	}
	for name, path := range map[string]string{"FED_TLS_CERT": c.TLSCert, "FED_TLS_KEY": c.TLSKey, "FED_TLS_CA": c.TLSCA} {
		if path == "" {
			add("%s is required", name)
		} else if _, err := os.Stat(path); err != nil {
			add("%s: %v", name, err)
		}
	}
	if c.TLSReloadInterval <= 0 {
		add("FED_TLS_RELOAD_INTERVAL must be positive")
	}
	if c.TLSMinVersion != "1.3" && c.TLSMinVersion != "1.2" {
		add("FED_TLS_MIN_VERSION %q is not 1.3 or 1.2", c.TLSMinVersion)
	}
	if c.KVBucket != "" && !contract.ValidBucket(c.KVBucket) {
		add("FED_KV_BUCKET %q is not [A-Za-z0-9_-]+", c.KVBucket)
	}
	if err := ValidReplicas(c.JetStreamReplicas); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.ValidateServing())
	if c.ShutdownTimeout <= 0 {
		add("FED_SHUTDOWN_TIMEOUT must be positive")
	}
	if c.OpsAddr != "" {
		if err := CheckListenAddr(c.OpsAddr); err != nil {
			add("FED_OPS_ADDR: %v", err)
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		add("FED_LOG_FORMAT %q is not json or text", c.LogFormat)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		add("FED_LOG_LEVEL: %v", err)
	}
	return errors.Join(errs...)
}

// checkStrategyList refuses a strategy and an allow list that contradict
// each other: a list that the strategy ignores, or allow-list with nothing
// that could allow a domain.
func (c *Common) checkStrategyList() error {
	listed := len(c.AllowList) > 0
	switch {
	case listed && (c.Strategy == contract.AllowAll || c.Strategy == contract.AllowNone):
		return fmt.Errorf("FED_ALLOW_LIST is set but FED_STRATEGY=%s ignores it: set FED_STRATEGY=allow-list to federate with the listed domains only, or unset FED_ALLOW_LIST", c.Strategy)
	case !listed && c.Strategy == contract.AllowList && c.KVBucket == "":
		return fmt.Errorf("FED_STRATEGY=allow-list with an empty FED_ALLOW_LIST and no FED_KV_BUCKET allows no domain: list the remote domains in FED_ALLOW_LIST (comma-separated), or set FED_KV_BUCKET to add them with fedctl")
	}
	return nil
}

// ValidateServing checks the fields that the federator and the ingress
// themselves use to serve requests (their constructors check them; the
// shared services are built from the rest): FED_SUBJECT_PREFIX,
// FED_COMPONENTS, FED_REQUEST_TIMEOUT, FED_IDENTITY and the object store
// settings. Validate includes it.
func (c *Common) ValidateServing() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := contract.NewSubjects(c.SubjectPrefix); err != nil {
		add("FED_SUBJECT_PREFIX: %v", err)
	}
	if len(c.Components) == 0 {
		add("FED_COMPONENTS is empty")
	}
	for _, comp := range c.Components {
		if !contract.ValidComponent(comp) {
			add("FED_COMPONENTS entry %q is not [a-z0-9-]{1,63}", comp)
		}
	}
	if c.RequestTimeout <= 0 {
		add("FED_REQUEST_TIMEOUT must be positive")
	}
	if c.Identity != IdentitySRV && c.Identity != IdentitySRVOrDomain {
		add("FED_IDENTITY %q is not %s or %s", c.Identity, IdentitySRV, IdentitySRVOrDomain)
	}
	if !contract.ValidBucket(c.ObjectBucket) {
		add("FED_OBJECT_BUCKET %q is not [A-Za-z0-9_-]+", c.ObjectBucket)
	}
	if c.ObjectTTL < contract.MinObjectTTL {
		add("FED_OBJECT_TTL must be at least %v (JetStream's shortest maximum age), got %v", contract.MinObjectTTL, c.ObjectTTL)
	}
	if c.MaxObjectBytes <= 0 {
		add("FED_MAX_OBJECT_BYTES must be positive, got %d", c.MaxObjectBytes)
	}
	if c.MaxObjectTransfers <= 0 {
		add("FED_MAX_OBJECT_TRANSFERS must be positive, got %d", c.MaxObjectTransfers)
	}
	return errors.Join(errs...)
}

// Normalize makes the domains canonical (lower case, IDNA): FED_DOMAIN and
// the entries of FED_ALLOW_LIST. Invalid ones are left as they are
// (Validate reports them).
func (c *Common) Normalize() {
	if d, err := contract.NormalizeDomain(c.Domain); err == nil {
		c.Domain = d
	}
	list := make([]string, len(c.AllowList))
	for i, d := range c.AllowList {
		list[i] = d
		if n, err := contract.NormalizeDomain(strings.TrimSpace(d)); err == nil {
			list[i] = n
		}
	}
	c.AllowList = list
}

// CheckListenAddr checks a listen address: host:port with a numeric port
// (host may be empty: every interface).
func CheckListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port is not a number 0-65535", addr)
	}
	return nil
}

// MaxReplicas is the most replicas NATS JetStream keeps of a stream.
const MaxReplicas = 5

// ValidReplicas checks a FED_JETSTREAM_REPLICAS value.
func ValidReplicas(n int) error {
	if n < 1 || n > MaxReplicas {
		return fmt.Errorf("FED_JETSTREAM_REPLICAS %d is not 1 to %d", n, MaxReplicas)
	}
	return nil
}

// DNSServers returns FED_DNS_SERVER split on commas (empty: system resolver).
func (c *Common) DNSServers() []string {
	var out []string
	for _, s := range strings.Split(c.DNSServer, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Load fills cfg (a pointer to a struct with env tags, holding its
// defaults) from the environment through lookup (nil: the process
// environment). Each variable is read on its own: a value that cannot be
// parsed is reported with its variable's name and leaves that field at its
// default, so that one mistake gives one message (joined with the others),
// not a cascade. A text or list variable set to the empty string is empty
// (FED_KV_BUCKET= turns the dynamic configuration off); an unset one keeps
// its default.
func Load(ctx context.Context, cfg any, lookup envconfig.Lookuper) error {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	var errs []error
	for _, name := range Variables(cfg) {
		if v, ok := lookup.Lookup(name); ok && v == "" {
			if f, ok := fieldOf(reflect.ValueOf(cfg).Elem(), name); ok && (f.Kind() == reflect.String || f.Kind() == reflect.Slice) {
				f.SetZero()
			}
			continue
		}
		one := onlyLookuper{name: name, l: lookup}
		if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: cfg, Lookuper: one, DefaultOverwrite: true}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, unwrapField(err)))
		}
	}
	return errors.Join(errs...)
}

// onlyLookuper looks up one variable and reports every other as unset.
type onlyLookuper struct {
	name string
	l    envconfig.Lookuper
}

func (o onlyLookuper) Lookup(key string) (string, bool) {
	if key != o.name {
		return "", false
	}
	return o.l.Lookup(key)
}

// unwrapField drops go-envconfig's "Field: " prefixes, which name Go
// fields rather than variables.
func unwrapField(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// Variables returns the names of the environment variables of cfg (a
// pointer to a struct with env tags), in the order of its fields.
func Variables(cfg any) []string {
	var names []string
	walkValues(reflect.ValueOf(cfg).Elem(), func(_ reflect.StructField, name string, _ reflect.Value) { names = append(names, name) })
	return names
}

// Usage writes the variables of cfg (a pointer to a struct with env tags,
// holding its defaults), with their defaults and descriptions, for -h.
func Usage(w io.Writer, cfg any) {
	walkValues(reflect.ValueOf(cfg).Elem(), func(f reflect.StructField, name string, v reflect.Value) {
		line := fmt.Sprintf("  %-32s %s", name, f.Tag.Get("desc"))
		def := envValue(v)
		if _, opts, _ := strings.Cut(f.Tag.Get("env"), ","); def == "" {
			for _, o := range strings.Split(opts, ",") {
				if d, ok := strings.CutPrefix(strings.TrimSpace(o), "default="); ok {
					def = d // tools that keep their defaults in the tag
				}
			}
		}
		if def != "" {
			line += fmt.Sprintf(" (default %q)", def)
		}
		fmt.Fprintln(w, line)
	})
}

// envValue formats a field's value as it would be written in the
// environment ("" for a zero value): slices joined with commas.
func envValue(v reflect.Value) string {
	if v.IsZero() {
		return ""
	}
	switch x := v.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	case time.Duration:
		return x.String()
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// Base returns the common configuration; a binary's Config gets it by
// embedding Common.
func (c *Common) Base() *Common { return c }
