// Package policy decides which remote domains this backend federates with:
// the federation strategy of the contract (allow-none, allow-all,
// allow-list), used for outbound targets and inbound origins alike.
package policy

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/fedbus/fedbus/bus"
)

// Strategy names.
const (
	AllowNone = "allow-none"
	AllowAll  = "allow-all"
	AllowList = "allow-list"
)

// ErrBadStrategy is returned for an unknown strategy name.
var ErrBadStrategy = errors.New("unknown federation strategy")

// rules is one immutable snapshot of the policy.
type rules struct {
	strategy string
	allow    map[string]struct{}
}

// Policy is safe for concurrent use; Set swaps the rules atomically.
type Policy struct {
	cur atomic.Pointer[rules]
}

// New returns a policy for a strategy and its allow list.
func New(strategy string, allowList []string) (*Policy, error) {
	p := &Policy{}
	if err := p.Set(strategy, allowList); err != nil {
		return nil, err
	}
	return p, nil
}

// Set replaces the rules. Domains of the list are normalised.
func (p *Policy) Set(strategy string, allowList []string) error {
	switch strategy {
	case AllowNone, AllowAll, AllowList:
	default:
		return fmt.Errorf("set policy %q: %w", strategy, ErrBadStrategy)
	}
	r := &rules{strategy: strategy, allow: make(map[string]struct{}, len(allowList))}
	for _, d := range allowList {
		n, err := bus.NormalizeDomain(d)
		if err != nil {
			return fmt.Errorf("set policy: allow list: %w", err)
		}
		r.allow[n] = struct{}{}
	}
	p.cur.Store(r)
	return nil
}

// Allowed reports whether federation with the (canonical) domain is allowed.
func (p *Policy) Allowed(domain string) bool {
	r := p.cur.Load()
	switch r.strategy {
	case AllowAll:
		return true
	case AllowList:
		_, ok := r.allow[domain]
		return ok
	default:
		return false
	}
}

// Check returns nil when domain is allowed, else a federation-denied error.
func (p *Policy) Check(domain string) error {
	if p.Allowed(domain) {
		return nil
	}
	return bus.Errorf(bus.LabelFederationDenied, "federation with %s is not allowed (strategy %s)", domain, p.cur.Load().strategy)
}
