package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestRequireDNSSEC checks that with RequireDNSSEC the identity check
// (HasTarget) trusts only SRV answers with the AD flag, that queries then
// set the DO bit, and that without it nothing changes. The outbound
// discovery (SRV, AppendSRV) is TestRequireDNSSECOutbound.
func TestRequireDNSSEC(t *testing.T) {
	const domain = "b.example.com"
	tests := []struct {
		name      string
		require   bool
		authentic bool // the resolver marks its answers authentic
		san       string
		want      bool
		wantErr   error
		doQueries bool // queries carry the DO bit
	}{
		{"not required, no AD", false, false, "fed.b-infra.test", true, nil, false},
		{"not required, AD", false, true, "fed.b-infra.test", true, nil, false},
		{"required, AD", true, true, "fed.b-infra.test", true, nil, true},
		{"required, AD, other name", true, true, "evil.test", false, nil, true},
		{"required, no AD", true, false, "fed.b-infra.test", false, discovery.ErrInsecure, true},
		{"required, no AD, other name", true, false, "evil.test", false, discovery.ErrInsecure, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.RequireDNSSEC = tc.require })
			e.dns.SetAuthenticData(tc.authentic)
			e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			got, err := e.r.HasTarget(context.Background(), domain, tc.san)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || errors.Is(err, discovery.ErrLookup) || got {
					t.Fatalf("HasTarget = %v, %v; want false, %v only", got, err, tc.wantErr)
				}
			} else if err != nil || got != tc.want {
				t.Fatalf("HasTarget = %v, %v; want %v", got, err, tc.want)
			}
			if do := e.dns.DOQueries() > 0; do != tc.doQueries {
				t.Errorf("DO bit sent %v, want %v", do, tc.doQueries)
			}
		})
	}
}

// TestRequireDNSSECOutbound checks the federator's discovery: with
// RequireDNSSEC, SRV and AppendSRV return no target of an answer without
// the AD flag (ErrInsecure, not ErrLookup, dst unchanged), the targets of
// an authentic one, and without RequireDNSSEC the targets either way.
func TestRequireDNSSECOutbound(t *testing.T) {
	const domain = "b.example.com"
	want := []discovery.Target{{Host: "fed.b-infra.test", Port: 443}}
	tests := []struct {
		name      string
		require   bool
		authentic bool
		wantErr   error // nil: want the targets
	}{
		{"not required, no AD", false, false, nil},
		{"not required, AD", false, true, nil},
		{"required, AD", true, true, nil},
		{"required, no AD", true, false, discovery.ErrInsecure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.RequireDNSSEC = tc.require })
			e.dns.SetAuthenticData(tc.authentic)
			e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			ts, err := e.r.SRV(context.Background(), domain)
			dst := make([]discovery.Target, 1, 4) // one target from an earlier call
			got, aerr := e.r.AppendSRV(context.Background(), dst, domain)
			if tc.wantErr != nil {
				for _, err := range []error{err, aerr} {
					if !errors.Is(err, tc.wantErr) || errors.Is(err, discovery.ErrLookup) {
						t.Fatalf("error %v, want %v only", err, tc.wantErr)
					}
				}
				if ts != nil || len(got) != len(dst) {
					t.Fatalf("targets returned with the error: SRV %v, AppendSRV %v", ts, got)
				}
				return
			}
			if err != nil || aerr != nil {
				t.Fatalf("SRV: %v; AppendSRV: %v", err, aerr)
			}
			if len(ts) != 1 || ts[0].Host != want[0].Host || ts[0].Port != want[0].Port {
				t.Errorf("SRV = %v, want %v", ts, want)
			}
			if len(got) != 2 || got[1].Host != want[0].Host {
				t.Errorf("AppendSRV = %v, want an empty target and %v", got, want)
			}
		})
	}
}

// TestRequireDNSSECCachesTheFlag checks that the AD flag is cached with
// its answer: a cached authentic answer stays trusted without a query, and
// the refreshed answer's flag replaces it.
func TestRequireDNSSECCachesTheFlag(t *testing.T) {
	const domain = "b.example.com"
	e := newEnv(t, func(c *discovery.Config) { c.RequireDNSSEC = true })
	e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
	hasTarget := func(t *testing.T) error {
		t.Helper()
		ok, err := e.r.HasTarget(context.Background(), domain, "fed.b-infra.test")
		if err == nil && !ok {
			t.Fatal("HasTarget false without an error")
		}
		return err
	}
	t.Run("authentic answer", func(t *testing.T) {
		e.dns.SetAuthenticData(true)
		if err := hasTarget(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("cached within the TTL", func(t *testing.T) {
		e.dns.SetAuthenticData(false)
		e.clock.Advance(30 * time.Second)
		if err := hasTarget(t); err != nil {
			t.Fatal(err)
		}
		if q := e.dns.Queries(domain, dns.TypeSRV); q != 1 {
			t.Errorf("%d SRV queries, want 1", q)
		}
	})
	t.Run("expired: the new answer lacks AD", func(t *testing.T) {
		e.clock.Advance(31 * time.Second)
		if err := hasTarget(t); !errors.Is(err, discovery.ErrInsecure) {
			t.Fatalf("error %v, want ErrInsecure", err)
		}
		// The outbound discovery judges the cached flag the same way.
		if ts, err := e.r.SRV(context.Background(), domain); !errors.Is(err, discovery.ErrInsecure) {
			t.Fatalf("SRV = %v, %v; want ErrInsecure", ts, err)
		}
	})
	t.Run("negative answer stays not found", func(t *testing.T) {
		e.dns.SetAuthenticData(true)
		_, err := e.r.HasTarget(context.Background(), "nx.example.com", "fed.b-infra.test")
		if !errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrInsecure) {
			t.Fatalf("error %v, want ErrNotFound", err)
		}
	})
}
