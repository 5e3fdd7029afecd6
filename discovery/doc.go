// Package discovery finds the federation endpoint of a backend domain with
// DNS SRV records (_wire-server-federator._tcp.<domain>, RFC 2782) and
// resolves the endpoint's addresses, for both the outbound federator and
// the inbound ingress (contract section 2, steps 1 and 3, and section 3, steps 5 and 6).
//
// A Resolver talks to the configured DNS servers directly (EDNS0 with a
// 1232-byte UDP size, TCP retry of truncated answers, servers tried in
// order with a per-query timeout) and keeps its own cache:
//
//   - positive answers are kept for their TTL, clamped to [MinTTL, MaxTTL];
//     negative answers (NXDOMAIN, empty answer) for the SOA minimum, clamped
//     to [NegativeMinTTL, NegativeMaxTTL];
//   - concurrent lookups of one name share one query;
//   - a name that is used in the last 20% of its TTL is refreshed in the
//     background, so names in use do not expire;
//   - when the DNS servers fail, an expired positive answer is served for up
//     to StaleFor (RFC 8767); the failure is logged once per name, and the
//     servers are asked again at most every StaleRetry.
//
// Errors wrap the sentinels of this package, which callers map to the
// contract's labels:
//
//	ErrNotFound, ErrServiceUnavailable  invalid-domain
//	ErrLookup                           discovery-failure
//	ErrPrivateTarget                    federation-denied
//	ErrInsecure                         authentication-failure (HasTarget, RequireDNSSEC)
//	                                    discovery-failure (SRV, AppendSRV, RequireDNSSEC)
//	context.DeadlineExceeded            federation-timeout
//
// ErrNoAddress concerns one target: the caller tries the next one. A
// lookup that ends with the caller's context wraps ctx.Err() only (not
// ErrLookup), unless an expired answer could be served instead. An
// invalid domain is ErrInvalidDomain (domain-parse-error).
//
// With RequireDNSSEC (FED_REQUIRE_DNSSEC), queries set the EDNS0 DO bit
// and the AD flag of each SRV answer is cached with it; HasTarget, the
// identity check of the ingress, and SRV and AppendSRV, the federator's
// discovery of where to send a request, refuse an answer without it
// (ErrInsecure). The address lookups do not look at the flag (the SRV
// target's certificate authenticates its address).
//
// Cache hits do not allocate (AppendSRV, AppendAddrs, HasTarget) and read
// a clock that a goroutine of the Resolver updates every 50ms; Close stops
// it.
package discovery
