// Package policy makes every authorization decision of fedbus locally:
// which remote domains this backend federates with (the contract's
// strategy: allow-none, allow-all, allow-list), and which components and
// RPCs each remote backend may reach (the seed's per-request authorization).
//
// The static base comes from the environment (FED_STRATEGY,
// FED_ALLOW_LIST); a JetStream key-value bucket (see Store and Watch) adds
// remote domains and rules at run time, shared by every instance. They
// combine as follows:
//
//   - allow-none: no federation at all; the bucket is ignored.
//   - allow-list: allowed domains are FED_ALLOW_LIST plus the bucket's
//     remotes.
//   - allow-all: every domain is allowed; the bucket only adds rules.
//
// Rules: a remote's own rules if it has any, else the bucket's default
// rules, else every RPC of every component of FED_COMPONENTS.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/fedbus/fedbus/contract"
)

// AnyRPC in a rule allows every RPC of the component.
const AnyRPC = "*"

// ErrBadStrategy is returned for an unknown strategy name.
var ErrBadStrategy = errors.New("unknown federation strategy")

// ErrBadRule is returned for a rule with an invalid component or rpc.
var ErrBadRule = errors.New("invalid rule")

// Rules says which RPCs of which components a remote may call: component →
// RPC names, or AnyRPC. A nil Rules allows everything of FED_COMPONENTS.
type Rules map[string][]string

// Validate checks the tokens of the rules.
func (r Rules) Validate() error {
	for comp, rpcs := range r {
		if !contract.ValidComponent(comp) {
			return fmt.Errorf("component %q: %w", comp, ErrBadRule)
		}
		for _, rpc := range rpcs {
			if rpc != AnyRPC && !contract.ValidRPC(rpc) {
				return fmt.Errorf("component %s rpc %q: %w", comp, rpc, ErrBadRule)
			}
		}
	}
	return nil
}

func (r Rules) allows(component, rpc string) bool {
	rpcs, ok := r[component]
	return ok && (slices.Contains(rpcs, AnyRPC) || slices.Contains(rpcs, rpc))
}

// Remote is the dynamic configuration of one remote domain.
type Remote struct {
	// Rules restrict what the remote may call; nil means the default rules.
	Rules Rules `json:"rules,omitempty"`
}

// snapshot is one immutable state of the policy.
type snapshot struct {
	strategy string
	static   map[string]struct{}
	remotes  map[string]Remote
	defaults Rules
}

// Policy is safe for concurrent use; updates swap an immutable snapshot.
type Policy struct {
	cur atomic.Pointer[snapshot]
}

// New returns a policy for a strategy and its static allow list.
func New(strategy string, allowList []string) (*Policy, error) {
	p := &Policy{}
	p.cur.Store(&snapshot{strategy: contract.AllowNone})
	if err := p.Set(strategy, allowList); err != nil {
		return nil, err
	}
	return p, nil
}

// Set replaces the static base. Domains of the list are normalised.
func (p *Policy) Set(strategy string, allowList []string) error {
	switch strategy {
	case contract.AllowNone, contract.AllowAll, contract.AllowList:
	default:
		return fmt.Errorf("set policy %q: %w", strategy, ErrBadStrategy)
	}
	static := make(map[string]struct{}, len(allowList))
	for _, d := range allowList {
		n, err := contract.NormalizeDomain(d)
		if err != nil {
			return fmt.Errorf("set policy: allow list: %w", err)
		}
		static[n] = struct{}{}
	}
	old := p.cur.Load()
	p.cur.Store(&snapshot{strategy: strategy, static: static, remotes: old.remotes, defaults: old.defaults})
	return nil
}

// SetDynamic replaces the dynamic part: remote domains (canonical) with
// their rules, and the default rules (nil: everything).
func (p *Policy) SetDynamic(remotes map[string]Remote, defaults Rules) {
	old := p.cur.Load()
	p.cur.Store(&snapshot{strategy: old.strategy, static: old.static, remotes: maps.Clone(remotes), defaults: defaults})
}

// DynamicRemotes returns how many remote domains the dynamic configuration
// lists.
func (p *Policy) DynamicRemotes() int { return len(p.cur.Load().remotes) }

// Strategy returns the static strategy.
func (p *Policy) Strategy() string { return p.cur.Load().strategy }

// Allowed reports whether federation with the (canonical) domain is allowed.
func (p *Policy) Allowed(domain string) bool {
	return p.cur.Load().allowed(domain)
}

func (s *snapshot) allowed(domain string) bool {
	switch s.strategy {
	case contract.AllowAll:
		return true
	case contract.AllowList:
		if _, ok := s.static[domain]; ok {
			return true
		}
		_, ok := s.remotes[domain]
		return ok
	default:
		return false
	}
}

// Check returns nil when domain is allowed, else a federation-denied error.
func (p *Policy) Check(domain string) error {
	s := p.cur.Load()
	if s.allowed(domain) {
		return nil
	}
	return contract.Errorf(contract.LabelFederationDenied, "federation with %s is not allowed (strategy %s)", domain, s.strategy)
}

// Authorize decides an inbound request: the origin must be allowed and its
// rules must allow component and rpc. The component is assumed to be one of
// FED_COMPONENTS already. A refusal is federation-denied.
func (p *Policy) Authorize(origin, component, rpc string) error {
	s := p.cur.Load()
	if !s.allowed(origin) {
		return contract.Errorf(contract.LabelFederationDenied, "federation with %s is not allowed (strategy %s)", origin, s.strategy)
	}
	rules := s.defaults
	if r, ok := s.remotes[origin]; ok && r.Rules != nil {
		rules = r.Rules
	}
	if rules == nil || rules.allows(component, rpc) {
		return nil
	}
	return contract.Errorf(contract.LabelFederationDenied, "%s may not call %s.%s", origin, component, rpc)
}

// Listed reports whether the operator named the (canonical) domain: it is
// in FED_ALLOW_LIST or a remote of the dynamic configuration, whatever the
// strategy. Metrics keep the names of listed domains only, so that their
// label values stay bounded.
func (p *Policy) Listed(domain string) bool {
	s := p.cur.Load()
	if _, ok := s.static[domain]; ok {
		return true
	}
	_, ok := s.remotes[domain]
	return ok
}

// Counts returns how many domains FED_ALLOW_LIST and the dynamic
// configuration name (for the readiness check and fedctl check).
func (p *Policy) Counts() (static, dynamic int) {
	s := p.cur.Load()
	return len(s.static), len(s.remotes)
}
