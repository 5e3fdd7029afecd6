package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// resolveSRV queries the federation SRV record of domain and returns its
// entry (positive, or negative with ErrNotFound / ErrServiceUnavailable),
// or an error wrapping ErrLookup.
func (r *Resolver) resolveSRV(ctx context.Context, domain string) (*entry, error) {
	qname := ServicePrefix + domain + "."
	resp, err := r.exchange(ctx, qname, dns.TypeSRV)
	if err != nil {
		return nil, lookupError(qname, "SRV", err)
	}
	now := r.now()
	if resp.Rcode == dns.RcodeNameError {
		return r.negative(resp, ErrNotFound, now), nil
	}
	var (
		targets []Target
		minTTL  = ^uint32(0)
		dot     bool
	)
	for _, rr := range resp.Answer {
		switch rr := rr.(type) {
		case *dns.SRV:
			minTTL = min(minTTL, rr.Hdr.Ttl)
			host := strings.ToLower(strings.TrimSuffix(rr.Target, "."))
			if host == "" {
				dot = true
				continue
			}
			targets = append(targets, Target{Host: host, Port: rr.Port, Priority: rr.Priority, Weight: rr.Weight})
		case *dns.CNAME:
			minTTL = min(minTTL, rr.Hdr.Ttl)
		}
	}
	switch {
	case len(targets) == 0 && dot:
		// RFC 2782: a single target "." means the service is decidedly
		// not available. Cached like an answer, for its own TTL.
		e := r.positive(minTTL, now)
		e.neg = ErrServiceUnavailable
		return e, nil
	case len(targets) == 0:
		return r.negative(resp, ErrNotFound, now), nil
	}
	slices.SortFunc(targets, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), strings.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
	targets = slices.Compact(targets)
	e := r.positive(minTTL, now)
	e.targets = targets
	e.authentic = resp.AuthenticatedData
	for i := 0; i < len(targets); {
		g := group{start: i}
		for i < len(targets) && targets[i].Priority == targets[g.start].Priority {
			g.sum += uint32(targets[i].Weight)
			if targets[i].Weight == 0 {
				g.zeros++
			}
			i++
		}
		g.end = i
		e.groups = append(e.groups, g)
	}
	return e, nil
}

// famResult is the answer of one address family.
type famResult struct {
	addrs  []netip.Addr
	ttl    uint32
	negTTL time.Duration // for an empty answer
	err    error
}

// resolveAddrs queries the A and AAAA records of host (in parallel) and
// returns its entry (positive, or negative with ErrNoAddress), or an error
// wrapping ErrLookup. One failing family is tolerated when the other has
// addresses; the entry then lives MinTTL only.
func (r *Resolver) resolveAddrs(ctx context.Context, host string) (*entry, error) {
	qname := host + "."
	var (
		res [2]famResult
		wg  sync.WaitGroup
	)
	for i, qtype := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Go(func() { res[i] = r.resolveFamily(ctx, qname, qtype) })
	}
	wg.Wait()
	now := r.now()

	var (
		all    []netip.Addr
		minTTL = ^uint32(0)
		errs   []error
		negTTL time.Duration
	)
	for _, f := range res {
		if f.err != nil {
			errs = append(errs, f.err)
			continue
		}
		if len(f.addrs) == 0 {
			if negTTL == 0 || f.negTTL < negTTL {
				negTTL = f.negTTL
			}
			continue
		}
		all = append(all, f.addrs...)
		minTTL = min(minTTL, f.ttl)
	}
	switch {
	case len(all) == 0 && len(errs) > 0:
		return nil, lookupError(qname, "A/AAAA", joinErrors(errs))
	case len(all) == 0:
		exp := now.add(negTTL)
		return &entry{neg: ErrNoAddress, expires: exp, refreshAt: exp, staleUntil: exp}, nil
	}
	e := r.positive(minTTL, now)
	if len(errs) > 0 {
		short := r.positive(0, now)
		e.expires, e.refreshAt, e.staleUntil = short.expires, short.refreshAt, short.staleUntil
	}
	slices.SortFunc(all, netip.Addr.Compare)
	all = slices.Compact(all)
	for _, a := range all {
		if !r.cfg.AllowPrivate && RefusedAddr(a) {
			e.refused++
			continue
		}
		e.addrs = append(e.addrs, a)
	}
	return e, nil
}

// resolveFamily queries one address type of qname.
func (r *Resolver) resolveFamily(ctx context.Context, qname string, qtype uint16) famResult {
	resp, err := r.exchange(ctx, qname, qtype)
	if err != nil {
		return famResult{err: fmt.Errorf("%s: %w", dns.TypeToString[qtype], err)}
	}
	var f famResult
	f.ttl = ^uint32(0)
	for _, rr := range resp.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A); ok && qtype == dns.TypeA {
				f.addrs = append(f.addrs, a.Unmap())
				f.ttl = min(f.ttl, rr.Hdr.Ttl)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok && qtype == dns.TypeAAAA {
				f.addrs = append(f.addrs, a) // an IPv4-mapped address stays mapped; RefusedAddr unmaps
				f.ttl = min(f.ttl, rr.Hdr.Ttl)
			}
		case *dns.CNAME:
			f.ttl = min(f.ttl, rr.Hdr.Ttl)
		}
	}
	if len(f.addrs) == 0 {
		f.negTTL = r.negativeTTL(resp)
	}
	return f
}

// lookupError wraps a failed query in ErrLookup. The cause is kept as
// text only, so that a DNS server's timeout never looks like the caller's
// deadline (context.DeadlineExceeded) to errors.Is.
func lookupError(qname, qtype string, cause error) error {
	return fmt.Errorf("%w: %s %s: %v", ErrLookup, strings.TrimSuffix(qname, "."), qtype, cause)
}

// joinErrors joins errors on one line (errors.Join uses newlines, which do
// not belong in a log line or an error reply).
func joinErrors(errs []error) error {
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// positive returns an entry expiring after the TTL clamped to [MinTTL,
// MaxTTL], refreshed from 80% of it on, servable stale for StaleFor.
func (r *Resolver) positive(ttl uint32, now mono) *entry {
	d := min(max(time.Duration(ttl)*time.Second, r.cfg.MinTTL), r.cfg.MaxTTL)
	if ttl == ^uint32(0) {
		d = r.cfg.MinTTL
	}
	return &entry{
		expires:    now.add(d),
		refreshAt:  now.add(d * 4 / 5),
		staleUntil: now.add(d + r.cfg.StaleFor),
	}
}

// negative returns the entry of a negative answer.
func (r *Resolver) negative(resp *dns.Msg, sentinel error, now mono) *entry {
	exp := now.add(r.negativeTTL(resp))
	return &entry{neg: sentinel, expires: exp, refreshAt: exp, staleUntil: exp}
}

// negativeTTL is the negative caching time of a response (RFC 2308): the
// smaller of the authority SOA's TTL and MINIMUM, clamped to
// [NegativeMinTTL, NegativeMaxTTL]; NegativeMinTTL without an SOA.
func (r *Resolver) negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			d := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(max(d, r.cfg.NegativeMinTTL), r.cfg.NegativeMaxTTL)
		}
	}
	return r.cfg.NegativeMinTTL
}

// exchange asks the servers in order and returns the first NOERROR or
// NXDOMAIN answer. The error joins the failure of every server tried.
func (r *Resolver) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	var errs []error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		resp, err := r.exchangeOne(ctx, server, qname, qtype)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("server %s: %w", server, err))
	}
	return nil, joinErrors(errs)
}

// exchangeOne asks one server over UDP with EDNS0 (the DO bit set when
// RequireDNSSEC), again over TCP when the answer is truncated, and without
// EDNS0 when the server does not know it (FORMERR). Answers other than
// NOERROR and NXDOMAIN are errors.
func (r *Resolver) exchangeOne(ctx context.Context, server, qname string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	// With RequireDNSSEC, DO (and AD, RFC 6840 section 5.7) ask a
	// validating resolver to say whether it validated the answer.
	m.AuthenticatedData = r.cfg.RequireDNSSEC
	m.SetEdns0(ednsSize, r.cfg.RequireDNSSEC)
	resp, err := r.query(ctx, r.udp, m, server)
	if err == nil && resp.Rcode == dns.RcodeFormatError && resp.IsEdns0() == nil {
		m.Extra = nil
		m.Id = dns.Id()
		resp, err = r.query(ctx, r.udp, m, server)
	}
	if err == nil && resp.Truncated {
		m.Id = dns.Id()
		resp, err = r.query(ctx, r.tcp, m, server)
		if err != nil {
			return nil, fmt.Errorf("TCP retry of a truncated answer: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype || !strings.EqualFold(resp.Question[0].Name, qname) {
		return nil, errors.New("answer does not match the question")
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return resp, nil
	}
	rc, ok := dns.RcodeToString[resp.Rcode]
	if !ok {
		rc = fmt.Sprintf("RCODE%d", resp.Rcode)
	}
	return nil, fmt.Errorf("answer %s", rc)
}

// query sends m to server with c, within QueryTimeout. Cancelling ctx
// (Close) closes the connection, so a query never outlives Close for long.
func (r *Resolver) query(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
	defer cancel()
	conn, err := c.DialContext(qctx, server)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(qctx, func() { _ = conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(qctx, m, conn)
	switch {
	case err == nil:
		return resp, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case qctx.Err() != nil, isTimeout(err):
		// The query's own time ran out (the read deadline, or the
		// AfterFunc closed the connection): say so, rather than "i/o
		// timeout" or "use of closed network connection".
		return nil, fmt.Errorf("no answer within %s", r.cfg.QueryTimeout)
	default:
		return nil, err
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
