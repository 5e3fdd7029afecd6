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
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/contract"
)

// Common is the part of the configuration that the federator and the
// ingress share. Tags: env (go-envconfig) and desc (for -h).
type Common struct {
	Domain              string        `env:"FED_DOMAIN" desc:"this backend's domain (required)"`
	NATSURL             string        `env:"FED_NATS_URL, default=nats://127.0.0.1:4222" desc:"NATS server(s), comma-separated"`
	SubjectPrefix       string        `env:"FED_SUBJECT_PREFIX, default=fed" desc:"first subject token"`
	DNSServer           string        `env:"FED_DNS_SERVER" desc:"host:port of the resolver(s) for SRV and address lookups, comma-separated; system resolver if unset"`
	Strategy            string        `env:"FED_STRATEGY, default=allow-none" desc:"allow-none, allow-all or allow-list"`
	AllowList           []string      `env:"FED_ALLOW_LIST" desc:"comma-separated domains for allow-list"`
	TLSCert             string        `env:"FED_TLS_CERT" desc:"this backend's certificate chain, PEM file (required)"`
	TLSKey              string        `env:"FED_TLS_KEY" desc:"this backend's private key, PEM file (required)"`
	TLSCA               string        `env:"FED_TLS_CA" desc:"PEM bundle of CAs trusted for remote backends (required)"`
	Components          []string      `env:"FED_COMPONENTS, default=brig,galley,cargohold" desc:"components federated, in both directions"`
	RequestTimeout      time.Duration `env:"FED_REQUEST_TIMEOUT, default=10s" desc:"deadline of one federated request"`
	AllowPrivateTargets bool          `env:"FED_ALLOW_PRIVATE_TARGETS, default=false" desc:"allow targets on loopback, private or link-local addresses (tests and local demos only)"`
	NATS                NATSAuth
	KVBucket            string        `env:"FED_KV_BUCKET" desc:"JetStream key-value bucket with the dynamic federation config (remote domains and their rules); empty: static configuration only"`
	TLSReloadInterval   time.Duration `env:"FED_TLS_RELOAD_INTERVAL, default=2s" desc:"how often the certificate, key and CA files are checked for changes"`
	TLSMinVersion       string        `env:"FED_TLS_MIN_VERSION, default=1.3" desc:"lowest TLS version for federation traffic: 1.3 or 1.2"`
	ShutdownTimeout     time.Duration `env:"FED_SHUTDOWN_TIMEOUT, default=30s" desc:"how long a stopping process waits for requests in flight"`
	LogFormat           string        `env:"FED_LOG_FORMAT, default=json" desc:"json or text"`
	LogLevel            string        `env:"FED_LOG_LEVEL, default=info" desc:"debug, info, warn or error"`
	Identity            string        `env:"FED_IDENTITY, default=srv" desc:"how the ingress ties a client certificate to its origin domain: srv (a DNS SAN is an SRV target of the origin) or srv-or-domain (also a DNS SAN equal to the origin domain)"`
	RequireDNSSEC       bool          `env:"FED_REQUIRE_DNSSEC, default=false" desc:"trust only SRV answers that the resolver validated with DNSSEC (AD flag), for the ingress's identity check and the federator's discovery of remotes; needs a validating resolver on a trusted path"`
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

// Validate reports every problem of the common configuration at once.
func (c *Common) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Domain == "" {
		add("FED_DOMAIN is required")
	} else if d, err := contract.NormalizeDomain(c.Domain); err != nil {
		add("FED_DOMAIN %q is not a valid domain", c.Domain)
	} else {
		c.Domain = d
	}
	if c.NATSURL == "" {
		add("FED_NATS_URL is empty")
	}
	if _, err := contract.NewSubjects(c.SubjectPrefix); err != nil {
		add("FED_SUBJECT_PREFIX: %v", err)
	}
	for _, s := range c.DNSServers() {
		if _, _, err := net.SplitHostPort(s); err != nil {
			add("FED_DNS_SERVER %q is not host:port", s)
		}
	}
	if !contract.ValidStrategy(c.Strategy) {
		add("FED_STRATEGY %q is not allow-none, allow-all or allow-list", c.Strategy)
	}
	for i, d := range c.AllowList {
		n, err := contract.NormalizeDomain(strings.TrimSpace(d))
		if err != nil {
			add("FED_ALLOW_LIST entry %q is not a valid domain", d)
			continue
		}
		c.AllowList[i] = n
	}
	for name, path := range map[string]string{"FED_TLS_CERT": c.TLSCert, "FED_TLS_KEY": c.TLSKey, "FED_TLS_CA": c.TLSCA} {
		if path == "" {
			add("%s is required", name)
		} else if _, err := os.Stat(path); err != nil {
			add("%s: %v", name, err)
		}
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
	if c.TLSReloadInterval <= 0 {
		add("FED_TLS_RELOAD_INTERVAL must be positive")
	}
	if c.TLSMinVersion != "1.3" && c.TLSMinVersion != "1.2" {
		add("FED_TLS_MIN_VERSION %q is not 1.3 or 1.2", c.TLSMinVersion)
	}
	if c.KVBucket != "" && !validBucket(c.KVBucket) {
		add("FED_KV_BUCKET %q is not [A-Za-z0-9_-]+", c.KVBucket)
	}
	errs = append(errs, c.NATS.validate()...)
	if c.ShutdownTimeout <= 0 {
		add("FED_SHUTDOWN_TIMEOUT must be positive")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		add("FED_LOG_FORMAT %q is not json or text", c.LogFormat)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		add("FED_LOG_LEVEL: %v", err)
	}
	if c.Identity == "" {
		c.Identity = IdentitySRV
	}
	if c.Identity != IdentitySRV && c.Identity != IdentitySRVOrDomain {
		add("FED_IDENTITY %q is not %s or %s", c.Identity, IdentitySRV, IdentitySRVOrDomain)
	}
	return errors.Join(errs...)
}

func validBucket(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
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

// NATSServers returns FED_NATS_URL as nats.Connect expects it.
func (c *Common) NATSServers() string { return c.NATSURL }

// Load fills cfg (a pointer to a struct with env tags) from the environment
// through lookup (nil: the process environment).
func Load(ctx context.Context, cfg any, lookup envconfig.Lookuper) error {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: cfg, Lookuper: lookup}); err != nil {
		return fmt.Errorf("read environment: %w", err)
	}
	return nil
}

// Usage writes the variables of cfg (a pointer to a struct with env tags),
// with their defaults and descriptions, for -h.
func Usage(w io.Writer, cfg any) {
	writeUsage(w, reflect.TypeOf(cfg).Elem())
}

func writeUsage(w io.Writer, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		if tag == "" {
			if f.Type.Kind() == reflect.Struct {
				writeUsage(w, f.Type)
			}
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		def := ""
		for _, o := range strings.Split(opts, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(o), "default="); ok {
				def = v
			}
		}
		line := fmt.Sprintf("  %-26s %s", name, f.Tag.Get("desc"))
		if def != "" {
			line += fmt.Sprintf(" (default %q)", def)
		}
		fmt.Fprintln(w, line)
	}
}
