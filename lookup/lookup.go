// Package lookup is discovery as the contract sees it: it turns the
// outcome of a discovery lookup (package discovery, which knows nothing of
// fedbus) into the contract's error, the same way for the federator, which
// discovers the remotes it calls, and for the ingress, which discovers the
// origins that call it.
package lookup

import (
	"context"
	"errors"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
)

// Side says who looked a domain up, which decides two things: the label of
// an SRV answer that FED_REQUIRE_DNSSEC refuses, and whether the DNS
// failure's detail may be shown to the one who gets the error.
type Side int

const (
	// Outbound: the federator discovering a remote it is to call. The
	// error goes to a local component, with the failure's detail; an
	// unvalidated SRV answer is discovery-failure (no endpoint we may
	// trust was found: nothing is sent).
	Outbound Side = iota
	// Inbound: the ingress discovering the origin that calls it. The
	// error goes to the remote peer and leaves the detail out (it names
	// this backend's DNS servers; the caller logs it); an unvalidated SRV
	// answer is authentication-failure (the lookup worked, the peer's
	// claim is not proven).
	Inbound
)

// Failure maps a discovery failure of domain to the contract's error:
//
//	discovery.ErrInvalidDomain                 domain-parse-error
//	discovery.ErrInsecure                      discovery-failure (Outbound), authentication-failure (Inbound)
//	a deadline, or ctx's end                   federation-timeout
//	discovery.ErrNotFound, ErrServiceUnavailable  invalid-domain
//	discovery.ErrPrivateTarget                 federation-denied
//	anything else (ErrLookup)                  discovery-failure
//
// A *contract.Error in err's chain is returned as it is.
func Failure(ctx context.Context, side Side, domain string, err error) *contract.Error {
	var ce *contract.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, discovery.ErrInvalidDomain):
		return contract.Errorf(contract.LabelDomainParseError, "%s is not a valid domain", contract.Quote(domain))
	case errors.Is(err, discovery.ErrInsecure):
		// Before the deadline case: the answer did arrive. Not
		// invalid-domain: the record exists; not federation-denied: that
		// is the strategy and the private-address rule.
		if side == Inbound {
			return contract.Errorf(contract.LabelAuthenticationFailure, "the SRV record of %s is not DNSSEC-validated, which this backend requires (FED_REQUIRE_DNSSEC)", domain)
		}
		return contract.Errorf(contract.LabelDiscoveryFailure, "the SRV record of %s is not DNSSEC-validated (no AD flag), which this backend requires (FED_REQUIRE_DNSSEC); nothing was sent to it", domain)
	case errors.Is(err, context.DeadlineExceeded), side == Inbound && errors.Is(err, context.Canceled), side == Outbound && Expired(ctx):
		return timeout(domain)
	case errors.Is(err, discovery.ErrNotFound):
		return detail(side, contract.LabelInvalidDomain, domain+" has no federation SRV record", err)
	case errors.Is(err, discovery.ErrServiceUnavailable):
		return detail(side, contract.LabelInvalidDomain, domain+` does not federate (SRV target ".")`, err)
	case errors.Is(err, discovery.ErrPrivateTarget):
		return detail(side, contract.LabelFederationDenied, "every address of "+domain+" is refused (FED_ALLOW_PRIVATE_TARGETS is false)", err)
	case side == Inbound && ctx.Err() != nil:
		// The lookup failed because the request's deadline ran out.
		return timeout(domain)
	default:
		return detail(side, contract.LabelDiscoveryFailure, "discovery of "+domain+" failed", err)
	}
}

func timeout(domain string) *contract.Error {
	return contract.Errorf(contract.LabelTimeout, "the deadline ran out during discovery of %s", domain)
}

// detail returns the error with msg, followed by err's text when the
// error stays on this backend (Outbound).
func detail(side Side, label, msg string, err error) *contract.Error {
	if side == Outbound {
		return contract.Errorf(label, "%s: %v", msg, err)
	}
	return contract.Errorf(label, "%s", msg)
}

// Expired reports whether a request's time is up: its context ended, or
// its deadline passed (a dial bounded by the deadline may fail with an I/O
// timeout an instant before the context notices).
func Expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
