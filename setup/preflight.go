package setup

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
)

// Start-up checks: what would make every request of this backend fail is
// refused before serving, with the variable to change; what is suspicious
// but may be intended is logged once, as a warning.
const (
	// preflightDNSTimeout bounds the lookup of this backend's own SRV
	// record at start.
	preflightDNSTimeout = 5 * time.Second
	// expiryWarning: a certificate that expires sooner is worth a warning.
	expiryWarning = 7 * 24 * time.Hour
)

// preflight runs the start-up checks of a binary on its shared services:
// this backend's certificate is valid now, and one of its DNS names is a
// target of this backend's own SRV record (remote ingresses check that of
// every request, and remote federators verify the ingress's certificate
// for that name). The error names the variable and the fix.
func preflight(ctx context.Context, c *config.Common, sh *Shared, log *slog.Logger) error {
	leaf := sh.Certs.Leaf()
	if err := checkValidity(c.TLSCert, leaf, time.Now(), log); err != nil {
		return err
	}
	return checkOwnSRV(ctx, c, leaf, sh.Resolver, log)
}

// checkValidity refuses a certificate that is expired or not valid yet,
// and warns about one that expires within a week.
func checkValidity(file string, leaf *x509.Certificate, now time.Time, log *slog.Logger) error {
	const layout = time.RFC3339
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("FED_TLS_CERT %s is not valid before %s (now %s): every remote backend would refuse it; check this machine's clock, or use a certificate valid now",
			file, leaf.NotBefore.UTC().Format(layout), now.UTC().Format(layout))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("FED_TLS_CERT %s expired on %s: every remote backend would refuse it; renew it (the files are reloaded without restart)",
			file, leaf.NotAfter.UTC().Format(layout))
	case leaf.NotAfter.Sub(now) < expiryWarning:
		log.Warn("our certificate expires soon: renew it (the files are reloaded without restart)",
			"file", file, "not_after", leaf.NotAfter.UTC().Format(layout), "in", leaf.NotAfter.Sub(now).Round(time.Minute).String())
	}
	return nil
}

// checkOwnSRV looks up this backend's own SRV record through
// FED_DNS_SERVER and refuses a certificate none of whose DNS names is one
// of its targets. A DNS failure other than "no record" is only a warning:
// a DNS outage must not keep a backend from starting.
func checkOwnSRV(ctx context.Context, c *config.Common, leaf *x509.Certificate, res *discovery.Resolver, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, preflightDNSTimeout)
	defer cancel()
	record := "_wire-server-federator._tcp." + c.Domain
	resolvers := c.DNSServer
	if resolvers == "" {
		resolvers = "the system resolver"
	}
	names := leaf.DNSNames
	if len(names) == 0 {
		return fmt.Errorf("FED_TLS_CERT %s has no DNS name (subject alternative name): remote backends match it against the targets of %s; issue it for the SRV target host", c.TLSCert, record)
	}
	targets, err := res.SRV(ctx, c.Domain)
	switch {
	case errors.Is(err, discovery.ErrNotFound), errors.Is(err, discovery.ErrServiceUnavailable), err == nil && len(targets) == 0:
		return fmt.Errorf("FED_DOMAIN %s: %s has no usable SRV record (asked %s): remote backends can neither call this backend nor accept its requests; publish %s SRV <priority> <weight> <port> %s",
			c.Domain, record, resolvers, record, names[0])
	case errors.Is(err, discovery.ErrInsecure):
		log.Warn("our own SRV record is not validated by DNSSEC: remote backends with FED_REQUIRE_DNSSEC will refuse this backend", "record", record)
		return nil
	case err != nil:
		log.Warn("could not look up our own SRV record at start (DNS failed): not checked against our certificate", "record", record, "dns", resolvers, "err", err)
		return nil
	}
	var hosts []string
	for _, t := range targets {
		hosts = append(hosts, t.Host)
	}
	for _, n := range names {
		if ok, err := res.HasTarget(ctx, c.Domain, n); ok && err == nil {
			return nil
		}
	}
	for _, n := range names {
		if strings.EqualFold(strings.TrimSuffix(n, "."), c.Domain) {
			log.Warn("our certificate names our domain but none of its SRV targets: only remote backends with FED_IDENTITY="+config.IdentitySRVOrDomain+" accept it",
				"cert_names", names, "srv_targets", hosts)
			return nil
		}
	}
	return fmt.Errorf("FED_TLS_CERT %s is for %s, but %s (FED_DOMAIN, asked %s) points at %s: remote backends would refuse every request of this backend (%s) and reach its ingress under a name the certificate does not hold; use a certificate for %s, or point the SRV record at %s",
		c.TLSCert, strings.Join(names, ", "), record, resolvers, strings.Join(hosts, ", "), contract.LabelAuthenticationFailure, hosts[0], names[0])
}

// warnAllowList warns, once the dynamic configuration is loaded, when
// allow-list allows no domain at all (the bucket may get one later).
func warnAllowList(c *config.Common, sh *Shared, log *slog.Logger) {
	if c.Strategy == contract.AllowList && len(c.AllowList) == 0 && sh.Policy.DynamicRemotes() == 0 {
		log.Warn("FED_STRATEGY=allow-list, FED_ALLOW_LIST is empty and bucket "+c.KVBucket+" lists no remote: every remote domain is refused until one is added (fedctl remotes add <domain>)",
			"bucket", c.KVBucket)
	}
}
