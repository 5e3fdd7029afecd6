package ctl

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
)

// ErrFailed is returned by the diagnostic commands when a check failed
// (fedctl exits 1); what failed, and what to fix, is in their output.
var ErrFailed = errors.New("check failed")

// Diag is the configuration of the diagnostic commands (discover, call,
// check, remotes status): the variables of the federator and ingress that
// they look at, read from the same environment.
type Diag struct {
	Domain         string        `env:"FED_DOMAIN" desc:"this backend's domain (check, call)"`
	DNSServer      string        `env:"FED_DNS_SERVER" desc:"host:port of the resolver(s), comma-separated; system resolver if unset"`
	TLSCert        string        `env:"FED_TLS_CERT" desc:"this backend's certificate (check; discover presents it)"`
	TLSKey         string        `env:"FED_TLS_KEY" desc:"this backend's private key"`
	TLSCA          string        `env:"FED_TLS_CA" desc:"CAs trusted for remote backends (check; discover verifies with it)"`
	Strategy       string        `env:"FED_STRATEGY" desc:"federation strategy (check)"`
	AllowList      []string      `env:"FED_ALLOW_LIST" desc:"allowed domains (check)"`
	SubjectPrefix  string        `env:"FED_SUBJECT_PREFIX" desc:"first subject token"`
	AllowPrivate   bool          `env:"FED_ALLOW_PRIVATE_TARGETS" desc:"loopback and private addresses allowed (discover)"`
	StatusBucket   string        `env:"FED_STATUS_BUCKET" desc:"bucket of the remotes' up/down state (remotes status)"`
	RequestTimeout time.Duration `env:"FED_REQUEST_TIMEOUT" desc:"deadline of fedctl call"`
	// Expiry thresholds of fedctl check: a certificate (or CA) expiring
	// sooner fails, or is a warning.
	ExpiryFail time.Duration `env:"FEDCTL_EXPIRY_FAIL" desc:"fedctl check fails for a certificate expiring sooner"`
	ExpiryWarn time.Duration `env:"FEDCTL_EXPIRY_WARN" desc:"fedctl check warns for a certificate expiring sooner"`
}

// newDiag returns the diagnostics' defaults: the services' (one place for
// each, config.DefaultCommon and the federator's status bucket) and the
// expiry thresholds (7 and 30 days).
func newDiag() Diag {
	d := config.DefaultCommon()
	return Diag{Strategy: d.Strategy, SubjectPrefix: d.SubjectPrefix, StatusBucket: contract.DefaultStatusBucket, RequestTimeout: d.RequestTimeout,
		ExpiryFail: 7 * 24 * time.Hour, ExpiryWarn: 30 * 24 * time.Hour}
}

// Check states.
const (
	StateOK   = "ok"
	StateWarn = "warn"
	StateFail = "fail"
)

// Finding is one result of a diagnostic: what was looked at, its state,
// what was found, and what to do when it is not ok.
type Finding struct {
	Check  string `json:"check"`
	State  string `json:"state"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// findings collects the findings of a command.
type findings struct {
	Findings []Finding `json:"findings"`
}

func (r *findings) add(check, state, detail, fix string) {
	r.Findings = append(r.Findings, Finding{Check: check, State: state, Detail: detail, Fix: fix})
}

func (r *findings) failed() bool {
	return slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.State == StateFail })
}

// write prints the findings (one line each, the fix indented below) or
// their JSON.
func (r *findings) write(out io.Writer, asJSON bool, extra map[string]any) error {
	if asJSON {
		v := map[string]any{"findings": r.Findings, "ok": !r.failed()}
		for k, x := range extra {
			v[k] = x
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	for _, f := range r.Findings {
		mark := map[string]string{StateOK: "ok  ", StateWarn: "WARN", StateFail: "FAIL"}[f.State]
		fmt.Fprintf(out, "%s %-16s %s\n", mark, f.Check, f.Detail)
		if f.Fix != "" && f.State != StateOK {
			fmt.Fprintf(out, "     %-16s fix: %s\n", "", f.Fix)
		}
	}
	return nil
}

// resolver returns a discovery resolver for the diagnostics: every
// address kept (refused ones are shown as such).
func (d Diag) resolver() (*discovery.Resolver, error) {
	var servers []string
	for _, s := range strings.Split(d.DNSServer, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	return discovery.New(discovery.Config{Servers: servers, AllowPrivate: true, StaleFor: -1, Logger: slog.New(slog.DiscardHandler)})
}

// clientCert loads this backend's certificate when configured (nil when
// not).
func (d Diag) clientCert() (*tls.Certificate, error) {
	if d.TLSCert == "" || d.TLSKey == "" {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(d.TLSCert, d.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load FED_TLS_CERT %s and FED_TLS_KEY %s: %w", d.TLSCert, d.TLSKey, err)
	}
	return &c, nil
}

// caPool loads FED_TLS_CA (nil when not set) and returns its certificates.
func (d Diag) caPool() (*x509.CertPool, []*x509.Certificate, error) {
	if d.TLSCA == "" {
		return nil, nil, nil
	}
	data, err := os.ReadFile(d.TLSCA)
	if err != nil {
		return nil, nil, fmt.Errorf("read FED_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("FED_TLS_CA %s: %w", d.TLSCA, err)
		}
		pool.AddCert(c)
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("FED_TLS_CA %s holds no certificate", d.TLSCA)
	}
	return pool, certs, nil
}

// TargetReport is what fedctl discover found of one SRV target.
type TargetReport struct {
	Host      string       `json:"host"`
	Port      uint16       `json:"port"`
	Priority  uint16       `json:"priority"`
	Weight    uint16       `json:"weight"`
	Addresses []AddrReport `json:"addresses"`
	Cert      *ServedCert  `json:"certificate,omitempty"`
	Error     string       `json:"error,omitempty"`
}

// AddrReport is one address of a target.
type AddrReport struct {
	Addr    string `json:"addr"`
	Refused bool   `json:"refused"` // loopback, private... while FED_ALLOW_PRIVATE_TARGETS is false
}

// ServedCert is the certificate a target served.
type ServedCert struct {
	Subject   string    `json:"subject"`
	DNSNames  []string  `json:"dns_names"`
	Issuer    string    `json:"issuer"`
	NotAfter  time.Time `json:"not_after"`
	NameFits  bool      `json:"name_fits"`
	Trusted   *bool     `json:"trusted,omitempty"` // chains to FED_TLS_CA (when set)
	TLS       string    `json:"tls"`
	ALPN      string    `json:"alpn"`
	VerifyErr string    `json:"verify_error,omitempty"`
}

// discover is fedctl discover <domain>.
func discover(ctx context.Context, d Diag, domain string, out io.Writer, asJSON bool) error {
	res, err := d.resolver()
	if err != nil {
		return err
	}
	defer res.Close()
	var r findings
	var targets []TargetReport
	ts, err := res.SRV(ctx, domain)
	name := discovery.ServicePrefix + domain
	if err != nil {
		r.add("srv", StateFail, fmt.Sprintf("%s: %v", name, err), srvFix(err, domain))
		return finish(&r, out, asJSON, map[string]any{"domain": domain, "targets": targets})
	}
	r.add("srv", StateOK, fmt.Sprintf("%s: %d target(s), in the order fedbus tries them (lowest priority first; within one priority a weighted random order, which changes between runs)", name, len(ts)), "")
	cert, err := d.clientCert()
	if err != nil {
		r.add("certificate", StateWarn, err.Error(), "set FED_TLS_CERT and FED_TLS_KEY to present this backend's certificate")
	}
	pool, _, err := d.caPool()
	if err != nil {
		r.add("ca", StateWarn, err.Error(), "set FED_TLS_CA to verify the targets' certificates")
	}
	usable := 0
	for i, t := range ts {
		tr := TargetReport{Host: t.Host, Port: t.Port, Priority: t.Priority, Weight: t.Weight}
		label := fmt.Sprintf("target %d", i+1)
		addrs, aerr := res.Addrs(ctx, t.Host)
		for _, a := range addrs {
			tr.Addresses = append(tr.Addresses, AddrReport{Addr: a.String(), Refused: !d.AllowPrivate && discovery.RefusedAddr(a)})
		}
		if aerr != nil {
			tr.Error = aerr.Error()
			r.add(label, StateFail, fmt.Sprintf("%s:%d: no address: %v", t.Host, t.Port, aerr), "add an A or AAAA record for "+t.Host)
			targets = append(targets, tr)
			continue
		}
		tr.Cert, err = probe(ctx, t, addrs, cert, pool)
		state, detail, fix := judgeTarget(t, tr, err, d.AllowPrivate)
		if err != nil {
			tr.Error = err.Error()
		}
		if state == StateOK {
			usable++
		}
		r.add(label, state, detail, fix)
		targets = append(targets, tr)
	}
	if usable == 0 {
		r.add("reachable", StateFail, "no target of "+domain+" can be used", "see the targets above")
	}
	return finish(&r, out, asJSON, map[string]any{"domain": domain, "targets": targets})
}

// judgeTarget states what probing one target found.
func judgeTarget(t discovery.Target, tr TargetReport, err error, allowPrivate bool) (state, detail, fix string) {
	where := fmt.Sprintf("%s:%d (priority %d, weight %d), addresses %s", t.Host, t.Port, t.Priority, t.Weight, addrList(tr.Addresses))
	allRefused := !slices.ContainsFunc(tr.Addresses, func(a AddrReport) bool { return !a.Refused })
	switch {
	case err != nil:
		return StateFail, where + ": " + err.Error(), "make the ingress of " + t.Host + " listen on port " + strconv.Itoa(int(t.Port)) + " with TLS"
	case !tr.Cert.NameFits:
		return StateFail, fmt.Sprintf("%s: serves a certificate for %s, not for %s", where, strings.Join(tr.Cert.DNSNames, ","), t.Host),
			"the remote must serve a certificate whose DNS names include " + t.Host + " (or point its SRV record at one of its names)"
	case tr.Cert.Trusted != nil && !*tr.Cert.Trusted:
		return StateFail, fmt.Sprintf("%s: certificate of %s issued by %q does not chain to FED_TLS_CA (%s)", where, t.Host, tr.Cert.Issuer, tr.Cert.VerifyErr),
			"add the remote's CA to FED_TLS_CA, or have the remote use a certificate of a CA in it"
	case time.Until(tr.Cert.NotAfter) < 0:
		return StateFail, fmt.Sprintf("%s: certificate expired at %s", where, tr.Cert.NotAfter.UTC().Format(time.RFC3339)), "the remote must renew its certificate"
	case !allowPrivate && allRefused:
		return StateFail, where + ": every address is loopback/private/link-local", "set FED_ALLOW_PRIVATE_TARGETS=true only for local tests, else publish a public address"
	}
	return StateOK, fmt.Sprintf("%s: certificate %s (issuer %q) fits, valid until %s, %s, ALPN %s", where, strings.Join(tr.Cert.DNSNames, ","), tr.Cert.Issuer,
		tr.Cert.NotAfter.UTC().Format(time.RFC3339), tr.Cert.TLS, tr.Cert.ALPN), ""
}

func addrList(as []AddrReport) string {
	var s []string
	for _, a := range as {
		if a.Refused {
			s = append(s, a.Addr+" (refused: FED_ALLOW_PRIVATE_TARGETS is false)")
		} else {
			s = append(s, a.Addr)
		}
	}
	return strings.Join(s, ", ")
}

// probe makes a TLS handshake with the first address of t that answers
// (presenting cert when set) and describes the certificate it serves.
func probe(ctx context.Context, t discovery.Target, addrs []netip.Addr, cert *tls.Certificate, pool *x509.CertPool) (*ServedCert, error) {
	var lastErr error
	for _, a := range addrs {
		cfg := &tls.Config{
			ServerName: t.Host, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
			// Verified below, to say what is wrong rather than fail.
			InsecureSkipVerify: true, //nolint:gosec // verified by hand below
		}
		if cert != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(t.Port))))
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		tc := conn.(*tls.Conn)
		cs := tc.ConnectionState()
		_ = tc.Close()
		if len(cs.PeerCertificates) == 0 {
			return nil, errors.New("no certificate served")
		}
		leaf := cs.PeerCertificates[0]
		sc := &ServedCert{Subject: leaf.Subject.String(), DNSNames: leaf.DNSNames, Issuer: leaf.Issuer.String(), NotAfter: leaf.NotAfter,
			NameFits: leaf.VerifyHostname(t.Host) == nil, TLS: tls.VersionName(cs.Version), ALPN: cs.NegotiatedProtocol}
		if pool != nil {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, verr := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			ok := verr == nil
			sc.Trusted = &ok
			if verr != nil {
				sc.VerifyErr = verr.Error()
			}
		}
		return sc, nil
	}
	return nil, fmt.Errorf("no address answered: %w", lastErr)
}

// srvFix says what to do about a failed SRV lookup of domain.
func srvFix(err error, domain string) string {
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return "publish the record " + discovery.ServicePrefix + domain + ". SRV <priority> <weight> <port> <federator host>."
	case errors.Is(err, discovery.ErrServiceUnavailable):
		return domain + " says it does not federate (SRV target \".\")"
	case errors.Is(err, discovery.ErrInvalidDomain):
		return "give a domain such as b.example.com"
	}
	return "check FED_DNS_SERVER: the DNS servers did not answer"
}

// finish writes the findings and returns ErrFailed when a check failed.
func finish(r *findings, out io.Writer, asJSON bool, extra map[string]any) error {
	if err := r.write(out, asJSON, extra); err != nil {
		return err
	}
	if r.failed() {
		return ErrFailed
	}
	return nil
}

// newTraceParent returns a new sampled W3C traceparent.
func newTraceParent() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}
