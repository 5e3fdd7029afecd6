package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/test/testbed"
)

// permutations returns every order of ts.
func permutations(ts []discovery.Target) [][]discovery.Target {
	if len(ts) <= 1 {
		return [][]discovery.Target{slices.Clone(ts)}
	}
	var out [][]discovery.Target
	for i := range ts {
		rest := append(slices.Clone(ts[:i]), ts[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]discovery.Target{ts[i]}, p...))
		}
	}
	return out
}

// rfc2782Prob is the probability of order under RFC 2782: priorities
// ascending; within one, each position drawn with probability w/(sum+1)
// for a weighted record when weight-0 records remain (1/(sum+1) for the
// weight-0 ones together, shared equally), w/sum otherwise.
func rfc2782Prob(order []discovery.Target) float64 {
	p := 1.0
	for i, t := range order {
		if i > 0 && t.Priority < order[i-1].Priority {
			return 0
		}
		var sum float64
		zeros := 0
		for _, o := range order[i:] {
			if o.Priority == t.Priority {
				sum += float64(o.Weight)
				if o.Weight == 0 {
					zeros++
				}
			}
		}
		switch {
		case zeros == 0:
			p *= float64(t.Weight) / sum
		case t.Weight == 0:
			p *= 1 / (sum + 1) / float64(zeros)
		default:
			p *= float64(t.Weight) / (sum + 1)
		}
	}
	return p
}

func TestSelectionOrder(t *testing.T) {
	const draws = 20000
	const tolerance = 0.02
	tests := []struct {
		name    string
		records []testbed.SRVRecord
	}{
		{"priorities only", []testbed.SRVRecord{
			{Target: "p20.test", Port: 1, Priority: 20, Weight: 1},
			{Target: "p5.test", Port: 1, Priority: 5, Weight: 1},
			{Target: "p10.test", Port: 1, Priority: 10, Weight: 1},
		}},
		{"weights 1:3", []testbed.SRVRecord{
			{Target: "w1.test", Port: 1, Priority: 10, Weight: 1},
			{Target: "w3.test", Port: 1, Priority: 10, Weight: 3},
		}},
		{"weights 10:20:70", []testbed.SRVRecord{
			{Target: "w10.test", Port: 1, Priority: 10, Weight: 10},
			{Target: "w20.test", Port: 1, Priority: 10, Weight: 20},
			{Target: "w70.test", Port: 1, Priority: 10, Weight: 70},
		}},
		{"weight 0 beside weight 9", []testbed.SRVRecord{
			{Target: "w0.test", Port: 1, Priority: 10, Weight: 0},
			{Target: "w9.test", Port: 1, Priority: 10, Weight: 9},
		}},
		{"two weight 0 beside weight 4", []testbed.SRVRecord{
			{Target: "a0.test", Port: 1, Priority: 10, Weight: 0},
			{Target: "b0.test", Port: 1, Priority: 10, Weight: 0},
			{Target: "w4.test", Port: 1, Priority: 10, Weight: 4},
		}},
		{"all weight 0", []testbed.SRVRecord{
			{Target: "a.test", Port: 1, Priority: 10},
			{Target: "b.test", Port: 1, Priority: 10},
			{Target: "c.test", Port: 1, Priority: 10},
		}},
		{"priorities and weights", []testbed.SRVRecord{
			{Target: "last.test", Port: 1, Priority: 30, Weight: 0},
			{Target: "mid-a.test", Port: 1, Priority: 20, Weight: 1},
			{Target: "mid-b.test", Port: 1, Priority: 20, Weight: 2},
			{Target: "first.test", Port: 1, Priority: 0, Weight: 5},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dns.SetSRV("b.example.com", 300, tc.records...)
			var all []discovery.Target
			for _, rec := range tc.records {
				all = append(all, discovery.Target{Host: rec.Target, Port: rec.Port, Priority: rec.Priority, Weight: rec.Weight})
			}
			seen := make(map[string]int)
			dst := make([]discovery.Target, 0, len(all))
			for range draws {
				var err error
				dst, err = e.r.AppendSRV(context.Background(), dst[:0], "b.example.com")
				if err != nil {
					t.Fatal(err)
				}
				seen[strings.Join(hosts(dst), ",")]++
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
				t.Errorf("%d SRV queries for %d lookups, want 1", q, draws)
			}
			for _, p := range permutations(all) {
				key := strings.Join(hosts(p), ",")
				want := rfc2782Prob(p)
				got := float64(seen[key]) / draws
				delete(seen, key)
				if want == 0 && got != 0 || math.Abs(got-want) > tolerance {
					t.Errorf("order %s: frequency %.4f, want %.4f", key, got, want)
				}
			}
			for key, n := range seen {
				t.Errorf("unexpected order %s (%d times)", key, n)
			}
		})
	}
}

func TestCacheMergesQueries(t *testing.T) {
	records := []testbed.SRVRecord{{Target: "fed.b-infra.test", Port: 443, Priority: 10, Weight: 1}}
	tests := []struct {
		name       string
		lookups    int
		concurrent bool
		delay      time.Duration
	}{
		{"10000 sequential lookups within TTL", 10000, false, 0},
		{"1000 concurrent first lookups", 1000, true, 50 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dns.SetSRV("b.example.com", 300, records...)
			e.dns.SetDelay(tc.delay)
			errs := make(chan error, tc.lookups)
			lookup := func() {
				ts, err := e.r.SRV(context.Background(), "b.example.com")
				if err == nil && (len(ts) != 1 || ts[0].Host != "fed.b-infra.test") {
					err = fmt.Errorf("targets %v", ts)
				}
				errs <- err
			}
			if tc.concurrent {
				var wg sync.WaitGroup
				start := make(chan struct{})
				for range tc.lookups {
					wg.Go(func() {
						<-start
						lookup()
					})
				}
				close(start)
				wg.Wait()
			} else {
				for range tc.lookups {
					lookup()
				}
			}
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
				t.Errorf("%d SRV queries, want 1", q)
			}
		})
	}
}

func TestBackgroundRefresh(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetSRV("b.example.com", 100, testbed.SRVRecord{Target: "old.b-infra.test", Port: 443})
	srv(t, e.r, "b.example.com")

	t.Run("hit before the last 20% of the TTL does not refresh", func(t *testing.T) {
		e.clock.Advance(70 * time.Second)
		srv(t, e.r, "b.example.com")
		if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
			t.Errorf("%d SRV queries, want 1", q)
		}
	})
	t.Run("hit in the last 20% refreshes once in the background", func(t *testing.T) {
		e.dns.SetSRV("b.example.com", 100, testbed.SRVRecord{Target: "new.b-infra.test", Port: 443})
		e.clock.Advance(15 * time.Second) // 85s of 100s
		for range 100 {
			ts := srv(t, e.r, "b.example.com")
			if ts[0].Host != "old.b-infra.test" && ts[0].Host != "new.b-infra.test" {
				t.Fatalf("targets %v", ts)
			}
		}
		eventually(t, "the refreshed answer", func() bool {
			return srv(t, e.r, "b.example.com")[0].Host == "new.b-infra.test"
		})
		if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 2 {
			t.Errorf("%d SRV queries, want 2", q)
		}
	})
	t.Run("the refreshed answer outlives the old TTL", func(t *testing.T) {
		e.clock.Advance(30 * time.Second) // 115s: old one expired, new one (85s+100s) not
		if h := srv(t, e.r, "b.example.com")[0].Host; h != "new.b-infra.test" {
			t.Errorf("target %s", h)
		}
		if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 2 {
			t.Errorf("%d SRV queries, want 2", q)
		}
	})
}

func TestServeStale(t *testing.T) {
	const domain = "b.example.com"
	tests := []struct {
		name      string
		queryTO   time.Duration
		countable bool // the broken server still counts queries
		breakDNS  func(tb testing.TB, e *env)
		repair    func(tb testing.TB, e *env)
	}{
		{"server stopped", 0, false,
			func(tb testing.TB, e *env) {
				if err := e.dns.Stop(); err != nil {
					tb.Fatal(err)
				}
			},
			func(tb testing.TB, e *env) {
				if err := e.dns.Start(); err != nil {
					tb.Fatal(err)
				}
			}},
		{"SERVFAIL", 0, true,
			func(_ testing.TB, e *env) { e.dns.SetFailure(domain, dns.RcodeServerFailure) },
			func(_ testing.TB, e *env) { e.dns.SetFailure(domain, dns.RcodeSuccess) }},
		{"server times out", 50 * time.Millisecond, true,
			func(_ testing.TB, e *env) { e.dns.SetFailure(domain, testbed.DropQuery) },
			func(_ testing.TB, e *env) { e.dns.SetFailure(domain, dns.RcodeSuccess) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) {
				c.StaleFor = 10 * time.Minute
				c.StaleRetry = 30 * time.Second
				c.QueryTimeout = tc.queryTO
			})
			e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "old.b-infra.test", Port: 443})
			srv(t, e.r, domain)
			tc.breakDNS(t, e)
			queries := func() int { return e.dns.Queries(domain, dns.TypeSRV) }

			e.clock.Advance(61 * time.Second)
			for i := range 200 {
				if h := srv(t, e.r, domain)[0].Host; h != "old.b-infra.test" {
					t.Fatalf("lookup %d: target %s, want the stale one", i, h)
				}
			}
			if n := strings.Count(e.log.String(), "serving stale answer"); n != 1 {
				t.Errorf("stale answer logged %d times, want once:\n%s", n, e.log)
			}
			if tc.countable && queries() != 2 {
				t.Errorf("%d SRV queries while serving stale, want 2 (warm-up and one failure)", queries())
			}

			e.clock.Advance(31 * time.Second) // StaleRetry passed: one new attempt
			srv(t, e.r, domain)
			if tc.countable {
				eventually(t, "the stale retry query", func() bool { return queries() == 3 })
			}
			for range 50 {
				srv(t, e.r, domain)
			}
			if tc.countable && queries() != 3 {
				t.Errorf("%d SRV queries, want 3", queries())
			}

			e.clock.Advance(10 * time.Minute) // past expiry + StaleFor
			_, err := e.r.SRV(context.Background(), domain)
			if !errors.Is(err, discovery.ErrLookup) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("after StaleFor: %v, want ErrLookup", err)
			}
			if n := strings.Count(e.log.String(), "serving stale answer"); n != 1 {
				t.Errorf("stale answer logged %d times, want once", n)
			}

			tc.repair(t, e)
			e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "new.b-infra.test", Port: 443})
			eventually(t, "recovery", func() bool {
				ts, err := e.r.SRV(context.Background(), domain)
				return err == nil && ts[0].Host == "new.b-infra.test"
			})
		})
	}
}

func TestServeStaleRecovers(t *testing.T) {
	e := newEnv(t, func(c *discovery.Config) { c.StaleRetry = 30 * time.Second })
	e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "old.b-infra.test", Port: 443})
	srv(t, e.r, "b.example.com")
	e.dns.SetFailure("b.example.com", dns.RcodeServerFailure)
	e.clock.Advance(61 * time.Second)
	srv(t, e.r, "b.example.com") // stale
	e.dns.SetFailure("b.example.com", dns.RcodeSuccess)
	e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "new.b-infra.test", Port: 443})
	if h := srv(t, e.r, "b.example.com")[0].Host; h != "old.b-infra.test" {
		t.Fatalf("within StaleRetry: %s, want the stale answer without a new query", h)
	}
	e.clock.Advance(31 * time.Second)
	if h := srv(t, e.r, "b.example.com")[0].Host; h != "old.b-infra.test" {
		t.Fatalf("retry lookup: %s, want the stale answer while refreshing", h)
	}
	eventually(t, "the new answer", func() bool { return srv(t, e.r, "b.example.com")[0].Host == "new.b-infra.test" })
}

func TestCallerDeadline(t *testing.T) {
	tests := []struct {
		name  string
		warm  bool
		want  string // target host, "" for an error
		isErr error
	}{
		{"no cached answer: deadline error", false, "", context.DeadlineExceeded},
		{"expired answer: served stale", true, "fed.b-infra.test", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.QueryTimeout = 5 * time.Second })
			e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			if tc.warm {
				srv(t, e.r, "b.example.com")
				e.clock.Advance(61 * time.Second)
			}
			e.dns.SetFailure("b.example.com", testbed.DropQuery)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			ts, err := e.r.SRV(ctx, "b.example.com")
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("lookup took %v, want about the caller's 50ms", el)
			}
			if tc.isErr != nil {
				if !errors.Is(err, tc.isErr) || errors.Is(err, discovery.ErrLookup) {
					t.Fatalf("error %v, want %v only", err, tc.isErr)
				}
				return
			}
			if err != nil || ts[0].Host != tc.want {
				t.Fatalf("got %v, %v; want %s", ts, err, tc.want)
			}
		})
	}
}

func TestTCPAndEDNS0(t *testing.T) {
	tests := []struct {
		name    string
		records int
		queries int // SRV queries received: UDP, plus TCP when truncated
	}{
		{"small answer over UDP", 2, 1},
		{"answer over 512 bytes fits the EDNS0 size", 25, 1},
		{"truncated answer completed over TCP", 60, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			var recs []testbed.SRVRecord
			want := make(map[string]bool)
			for i := range tc.records {
				h := fmt.Sprintf("host-%02d.b-infra.test", i)
				recs = append(recs, testbed.SRVRecord{Target: h, Port: 443, Priority: uint16(i % 3), Weight: 1})
				want[h] = true
			}
			e.dns.SetSRV("b.example.com", 300, recs...)
			ts := srv(t, e.r, "b.example.com")
			if len(ts) != tc.records {
				t.Fatalf("%d targets, want %d", len(ts), tc.records)
			}
			for i, tg := range ts {
				if !want[tg.Host] {
					t.Errorf("unexpected target %s", tg.Host)
				}
				delete(want, tg.Host)
				if i > 0 && tg.Priority < ts[i-1].Priority {
					t.Errorf("priority %d after %d", tg.Priority, ts[i-1].Priority)
				}
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != tc.queries {
				t.Errorf("%d SRV queries, want %d", q, tc.queries)
			}
		})
	}
}

func TestNegativeCaching(t *testing.T) {
	tests := []struct {
		name      string
		negTTL    uint32
		emptyName bool // the name exists without SRV (NODATA) instead of NXDOMAIN
		cachedAt  time.Duration
		requeryAt time.Duration
		maxNegTTL time.Duration // NegativeMaxTTL, 0 for the default
	}{
		{"NXDOMAIN for the SOA minimum", 30, false, 29 * time.Second, 31 * time.Second, 0},
		{"empty answer for the SOA minimum", 30, true, 29 * time.Second, 31 * time.Second, 0},
		{"short SOA minimum clamped up", 1, false, 4 * time.Second, 6 * time.Second, 0},
		{"long SOA minimum clamped down", 86400, false, 299 * time.Second, 301 * time.Second, 0},
		{"custom NegativeMaxTTL", 86400, false, 59 * time.Second, 61 * time.Second, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.NegativeMaxTTL = tc.maxNegTTL })
			e.dns.SetNegativeTTL(tc.negTTL)
			if tc.emptyName {
				e.dns.SetSRV("b.example.com", 300)
			}
			for range 10 {
				if _, err := e.r.SRV(context.Background(), "b.example.com"); !errors.Is(err, discovery.ErrNotFound) {
					t.Fatalf("error %v, want ErrNotFound", err)
				}
			}
			e.dns.SetSRV("b.example.com", 300, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			e.clock.Advance(tc.cachedAt)
			if _, err := e.r.SRV(context.Background(), "b.example.com"); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("at %v: error %v, want the cached ErrNotFound", tc.cachedAt, err)
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
				t.Errorf("%d SRV queries, want 1", q)
			}
			e.clock.Advance(tc.requeryAt - tc.cachedAt)
			if ts := srv(t, e.r, "b.example.com"); ts[0].Host != "fed.b-infra.test" {
				t.Errorf("targets %v", ts)
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 2 {
				t.Errorf("%d SRV queries, want 2", q)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	const domain = "b.example.com"
	tests := []struct {
		name    string
		domain  string
		setup   func(e *env)
		queryTO time.Duration
		is      []error
		isNot   []error
		says    string // the error's text holds it
	}{
		{"NXDOMAIN", domain, func(*env) {}, 0,
			[]error{discovery.ErrNotFound}, []error{discovery.ErrLookup}, ""},
		{"empty answer", domain, func(e *env) { e.dns.SetSRV(domain, 60) }, 0,
			[]error{discovery.ErrNotFound}, nil, ""},
		{"single dot target", domain, func(e *env) { e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "."}) }, 0,
			[]error{discovery.ErrServiceUnavailable}, []error{discovery.ErrNotFound}, ""},
		{"SERVFAIL", domain, func(e *env) { e.dns.SetFailure(domain, dns.RcodeServerFailure) }, 0,
			[]error{discovery.ErrLookup}, []error{context.DeadlineExceeded}, ""},
		{"REFUSED", domain, func(e *env) { e.dns.SetFailure(domain, dns.RcodeRefused) }, 0,
			[]error{discovery.ErrLookup}, nil, ""},
		{"every server times out", domain, func(e *env) { e.dns.SetFailure(domain, testbed.DropQuery) }, 50 * time.Millisecond,
			[]error{discovery.ErrLookup}, []error{context.DeadlineExceeded}, "no answer within 50ms"},
		{"invalid domain", "a..example.com", func(*env) {}, 0,
			[]error{discovery.ErrInvalidDomain}, []error{discovery.ErrLookup}, ""},
		{"one-label domain", "localhost", func(*env) {}, 0,
			[]error{discovery.ErrInvalidDomain}, nil, ""},
		{"wildcard domain", "*.example.com", func(*env) {}, 0,
			[]error{discovery.ErrInvalidDomain}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.QueryTimeout = tc.queryTO })
			tc.setup(e)
			for _, call := range []struct {
				name string
				fn   func() error
			}{
				{"SRV", func() error { _, err := e.r.SRV(context.Background(), tc.domain); return err }},
				{"HasTarget", func() error {
					ok, err := e.r.HasTarget(context.Background(), tc.domain, "fed.b-infra.test")
					if ok {
						t.Error("HasTarget true with an error")
					}
					return err
				}},
			} {
				err := call.fn()
				for _, want := range tc.is {
					if !errors.Is(err, want) {
						t.Errorf("%s: error %v, want errors.Is %v", call.name, err, want)
					}
				}
				for _, not := range tc.isNot {
					if errors.Is(err, not) {
						t.Errorf("%s: error %v is %v", call.name, err, not)
					}
				}
				if !strings.HasPrefix(err.Error(), "discover "+tc.domain+": ") {
					t.Errorf("%s: error %q lacks the prefix", call.name, err)
				}
				if tc.says != "" && !strings.Contains(err.Error(), tc.says) {
					t.Errorf("%s: error %q does not say %q", call.name, err, tc.says)
				}
				if strings.Contains(err.Error(), "closed network connection") {
					t.Errorf("%s: error %q names the query's closing, not its cause", call.name, err)
				}
			}
		})
	}
}

func TestServers(t *testing.T) {
	tests := []struct {
		name    string
		first   func(tb testing.TB) (addr string, d *testbed.DNS)
		queryTO time.Duration
	}{
		{"first server's port closed", func(tb testing.TB) (string, *testbed.DNS) { return closedAddr(tb), nil }, 0},
		{"first server SERVFAIL", func(tb testing.TB) (string, *testbed.DNS) {
			d := testbed.StartDNS(tb)
			d.SetFailure("b.example.com", dns.RcodeServerFailure)
			return d.Addr(), d
		}, 0},
		{"first server times out", func(tb testing.TB) (string, *testbed.DNS) {
			d := testbed.StartDNS(tb)
			d.SetFailure("b.example.com", testbed.DropQuery)
			return d.Addr(), d
		}, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, first := tc.first(t)
			e := newEnv(t, func(c *discovery.Config) {
				c.Servers = []string{addr}
				c.QueryTimeout = tc.queryTO
			})
			e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			if ts := srv(t, e.r, "b.example.com"); ts[0].Host != "fed.b-infra.test" {
				t.Errorf("targets %v", ts)
			}
			if first != nil && first.Queries("b.example.com", dns.TypeSRV) != 1 {
				t.Errorf("first server got %d queries, want 1", first.Queries("b.example.com", dns.TypeSRV))
			}
			if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
				t.Errorf("second server got %d queries, want 1", q)
			}
		})
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  discovery.Config
		ok   bool
	}{
		{"defaults with a server", discovery.Config{Servers: []string{"127.0.0.1:53"}}, true},
		{"bare IPv4 server", discovery.Config{Servers: []string{"127.0.0.1"}}, true},
		{"bare IPv6 server", discovery.Config{Servers: []string{"::1"}}, true},
		{"bracketed IPv6 server", discovery.Config{Servers: []string{"[::1]:5353"}}, true},
		{"bad port", discovery.Config{Servers: []string{"127.0.0.1:dns"}}, false},
		{"empty server", discovery.Config{Servers: []string{""}}, false},
		{"MinTTL over MaxTTL", discovery.Config{Servers: []string{"127.0.0.1"}, MinTTL: time.Hour, MaxTTL: time.Minute}, false},
		{"negative NegativeMinTTL", discovery.Config{Servers: []string{"127.0.0.1"}, NegativeMinTTL: -time.Second}, false},
		{"DownMin over DownMax", discovery.Config{Servers: []string{"127.0.0.1"}, DownMin: time.Hour}, false},
		{"negative MaxEntries", discovery.Config{Servers: []string{"127.0.0.1"}, MaxEntries: -1}, false},
		{"no logger", discovery.Config{Servers: []string{"127.0.0.1"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "no logger" {
				tc.cfg.Logger = slog.New(slog.DiscardHandler)
			}
			r, err := discovery.New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
			if r != nil {
				if err := r.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestCaseAndIDNA(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "FED.B-Infra.Test.", Port: 443})
	e.dns.SetSRV("xn--bcher-kva.example", 60, testbed.SRVRecord{Target: "fed.buecher.test", Port: 443})
	for _, tc := range []struct {
		name, domain, want string
	}{
		{"lower case", "b.example.com", "fed.b-infra.test"},
		{"upper case", "B.EXAMPLE.COM", "fed.b-infra.test"},
		{"mixed case", "b.Example.Com", "fed.b-infra.test"},
		{"IDNA", "Bücher.example", "fed.buecher.test"},
		{"punycode", "xn--bcher-kva.example", "fed.buecher.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ts := srv(t, e.r, tc.domain); ts[0].Host != tc.want {
				t.Errorf("target %q, want %q", ts[0].Host, tc.want)
			}
		})
	}
	if q := e.dns.Queries("b.example.com", dns.TypeSRV); q != 1 {
		t.Errorf("%d queries for b.example.com, want 1 (one cache entry whatever the case)", q)
	}
	if q := e.dns.Queries("xn--bcher-kva.example", dns.TypeSRV); q != 1 {
		t.Errorf("%d queries for xn--bcher-kva.example, want 1", q)
	}
}

func TestHasTarget(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetSRV("b.example.com", 60,
		testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443, Priority: 10},
		testbed.SRVRecord{Target: "backup.other.example.net", Port: 443, Priority: 20})
	tests := []struct {
		name, domain, san string
		want              bool
	}{
		{"exact", "b.example.com", "fed.b-infra.test", true},
		{"second target", "b.example.com", "backup.other.example.net", true},
		{"upper case SAN", "b.example.com", "FED.B-INFRA.TEST", true},
		{"upper case domain", "B.Example.Com", "fed.b-infra.test", true},
		{"trailing dot", "b.example.com", "fed.b-infra.test.", true},
		{"wildcard one label", "b.example.com", "*.b-infra.test", true},
		{"wildcard upper case", "b.example.com", "*.B-Infra.Test", true},
		{"wildcard is one label only", "b.example.com", "*.test", false},
		{"wildcard needs a label", "b.example.com", "*.fed.b-infra.test", false},
		{"deeper name", "b.example.com", "x.fed.b-infra.test", false},
		{"parent name", "b.example.com", "b-infra.test", false},
		{"suffix is not a label", "b.example.com", "ed.b-infra.test", false},
		{"wildcard suffix not on a label boundary", "b.example.com", "*.infra.test", false},
		{"other host", "b.example.com", "evil.test", false},
		{"bare star", "b.example.com", "*", false},
		{"empty", "b.example.com", "", false},
		{"partial wildcard unsupported", "b.example.com", "f*.b-infra.test", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.r.HasTarget(context.Background(), tc.domain, tc.san)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("HasTarget(%s, %s) = %v, want %v", tc.domain, tc.san, got, tc.want)
			}
		})
	}
}

func TestAddrs(t *testing.T) {
	tests := []struct {
		name         string
		host         string
		records      []string // nil: NXDOMAIN; empty: the name exists without address
		failure      int
		allowPrivate bool
		want         []string
		wantErr      error
	}{
		{"public IPv4 and IPv6", "fed.b-infra.test", []string{"2a00:1450::1", "1.2.3.1"}, 0, false, []string{"1.2.3.1", "2a00:1450::1"}, nil},
		{"upper case and trailing dot", "FED.B-Infra.Test.", []string{"1.2.3.1"}, 0, false, []string{"1.2.3.1"}, nil},
		{"loopback refused", "fed.b-infra.test", []string{"127.0.0.1"}, 0, false, nil, discovery.ErrPrivateTarget},
		{"loopback allowed", "fed.b-infra.test", []string{"127.0.0.1", "::1"}, 0, true, []string{"127.0.0.1", "::1"}, nil},
		{"private dropped beside public", "fed.b-infra.test", []string{"10.1.2.3", "1.2.3.1", "fd00::1"}, 0, false, []string{"1.2.3.1"}, nil},
		{"IPv4-mapped loopback refused", "fed.b-infra.test", []string{"::ffff:127.0.0.1"}, 0, false, nil, discovery.ErrPrivateTarget},
		{"CGNAT and link-local refused", "fed.b-infra.test", []string{"100.64.0.1", "fe80::1", "169.254.9.9"}, 0, false, nil, discovery.ErrPrivateTarget},
		{"no address", "fed.b-infra.test", []string{}, 0, false, nil, discovery.ErrNoAddress},
		{"NXDOMAIN", "fed.b-infra.test", nil, 0, false, nil, discovery.ErrNoAddress},
		{"SERVFAIL", "fed.b-infra.test", []string{"1.2.3.1"}, dns.RcodeServerFailure, false, nil, discovery.ErrLookup},
		{"public IP literal", "1.2.3.7", nil, 0, false, []string{"1.2.3.7"}, nil},
		{"loopback IP literal", "127.0.0.1", nil, 0, false, nil, discovery.ErrPrivateTarget},
		{"loopback IP literal allowed", "[::1]", nil, 0, true, []string{"::1"}, nil},
		{"invalid host name", "bad host.test", nil, 0, false, nil, discovery.ErrNoAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.AllowPrivate = tc.allowPrivate })
			if tc.records != nil {
				setA(t, e.dns, "fed.b-infra.test", 60, tc.records...)
			}
			if tc.failure != 0 {
				e.dns.SetFailure("fed.b-infra.test", tc.failure)
			}
			for range 20 {
				got, err := e.r.Addrs(context.Background(), tc.host)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("error %v, want %v", err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				var gs []string
				for _, a := range got {
					gs = append(gs, a.String())
				}
				if !slices.Equal(gs, tc.want) {
					t.Fatalf("addresses %v, want %v", gs, tc.want)
				}
			}
			if tc.failure == 0 {
				a, aaaa := e.dns.Queries("fed.b-infra.test", dns.TypeA), e.dns.Queries("fed.b-infra.test", dns.TypeAAAA)
				if a > 1 || aaaa > 1 || a != aaaa {
					t.Errorf("%d A and %d AAAA queries for 20 lookups, want at most one each", a, aaaa)
				}
			}
		})
	}
}

func TestAddrsExpire(t *testing.T) {
	e := newEnv(t, nil)
	setA(t, e.dns, "fed.b-infra.test", 60, "1.2.3.1")
	if _, err := e.r.Addrs(context.Background(), "fed.b-infra.test"); err != nil {
		t.Fatal(err)
	}
	setA(t, e.dns, "fed.b-infra.test", 60, "1.2.3.2")
	e.clock.Advance(61 * time.Second)
	got, err := e.r.Addrs(context.Background(), "fed.b-infra.test")
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("1.2.3.2") {
		t.Fatalf("after the TTL: %v, %v; want 1.2.3.2", got, err)
	}
}

func TestDownMarking(t *testing.T) {
	a := discovery.Target{Host: "a.b-infra.test", Port: 443, Priority: 10, Weight: 1}
	tests := []struct {
		name         string
		failures     int
		resetGap     time.Duration // before the last failure, time after the previous down time
		success      bool
		downAt, upAt time.Duration
	}{
		{"one failure", 1, 0, false, 700 * time.Millisecond, 1300 * time.Millisecond},
		{"two failures grow", 2, 0, false, 1400 * time.Millisecond, 2600 * time.Millisecond},
		{"four failures grow", 4, 0, false, 5900 * time.Millisecond, 10100 * time.Millisecond},
		{"capped at DownMax", 12, 0, false, 44 * time.Second, 61 * time.Second},
		{"success clears", 3, 0, true, -1, 0},
		{"count restarts after a long healthy time", 4, 2 * time.Minute, false, 700 * time.Millisecond, 1300 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dns.SetSRV("b.example.com", 3600,
				testbed.SRVRecord{Target: a.Host, Port: a.Port, Priority: a.Priority, Weight: a.Weight},
				testbed.SRVRecord{Target: "b.b-infra.test", Port: 443, Priority: 10, Weight: 1},
				testbed.SRVRecord{Target: "c.b-infra.test", Port: 443, Priority: 20, Weight: 1})
			srv(t, e.r, "b.example.com")
			for i := range tc.failures {
				if i == tc.failures-1 && tc.resetGap > 0 {
					e.clock.Advance(discovery.DefaultDownMax + tc.resetGap)
				}
				e.r.ReportFailure(a)
			}
			if tc.success {
				e.r.ReportSuccess(a)
			}
			// assert checks where a sorts in many draws: last when down,
			// within the first two (priority 10) when up.
			assert := func(down bool) {
				t.Helper()
				if got := e.r.Down(a); got != down {
					t.Errorf("Down = %v, want %v", got, down)
				}
				for range 200 {
					ts := srv(t, e.r, "b.example.com")
					if len(ts) != 3 {
						t.Fatalf("%d targets, want 3: a down target is never dropped", len(ts))
					}
					if i := slices.Index(hosts(ts), a.Host); down && i != 2 || !down && i == 2 {
						t.Fatalf("order %v with a down=%v", hosts(ts), down)
					}
				}
			}
			if tc.downAt >= 0 {
				e.clock.Advance(tc.downAt)
				assert(true)
			}
			e.clock.Advance(tc.upAt - max(tc.downAt, 0))
			assert(false)
		})
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, func(c *discovery.Config) { c.QueryTimeout = 10 * time.Second })
	e.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
	srv(t, e.r, "b.example.com")
	e.dns.SetFailure("slow.example.com", testbed.DropQuery)

	errc := make(chan error, 1)
	go func() {
		_, err := e.r.SRV(context.Background(), "slow.example.com")
		errc <- err
	}()
	eventually(t, "the dropped query", func() bool { return e.dns.Queries("slow.example.com", dns.TypeSRV) > 0 })
	start := time.Now()
	if err := e.r.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v with a query in flight", el)
	}
	if err := <-errc; !errors.Is(err, discovery.ErrLookup) {
		t.Errorf("lookup in flight at Close: %v, want ErrLookup", err)
	}
	if err := e.r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := e.r.SRV(context.Background(), "c.example.com"); !errors.Is(err, discovery.ErrLookup) {
		t.Errorf("uncached lookup after Close: %v, want ErrLookup", err)
	}
	srv(t, e.r, "b.example.com") // cached answers are still served
}

// TestCloseCancelsBackgroundQuery: Close cancels a query that no caller
// waits for any more (a background refresh, a flight its callers gave up
// on) well before its QueryTimeout.
func TestCloseCancelsBackgroundQuery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, e *env)
	}{
		{"refresh", func(t *testing.T, e *env) {
			e.dns.SetSRV("b.example.com", 100, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
			srv(t, e.r, "b.example.com")
			e.dns.SetFailure("b.example.com", testbed.DropQuery)
			e.clock.Advance(85 * time.Second) // last 20% of the TTL
			srv(t, e.r, "b.example.com")      // cached; starts the refresh
		}},
		{"abandoned flight", func(t *testing.T, e *env) {
			e.dns.SetFailure("b.example.com", testbed.DropQuery)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := e.r.SRV(ctx, "b.example.com"); !errors.Is(err, context.Canceled) {
				t.Fatalf("SRV with a cancelled context: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) { c.QueryTimeout = time.Minute })
			before := e.dns.Queries("b.example.com", dns.TypeSRV)
			tc.start(t, e)
			eventually(t, "the dropped background query", func() bool {
				return e.dns.Queries("b.example.com", dns.TypeSRV) > before
			})
			closed := make(chan error, 1)
			go func() { closed <- e.r.Close() }()
			var err error
			eventually(t, "Close with a background query in flight", func() bool {
				select {
				case err = <-closed:
					return true
				default:
					return false
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNoAllocsOnCacheHit(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetSRV("b.example.com", 3600,
		testbed.SRVRecord{Target: "a.b-infra.test", Port: 443, Priority: 10, Weight: 1},
		testbed.SRVRecord{Target: "b.b-infra.test", Port: 443, Priority: 10, Weight: 3},
		testbed.SRVRecord{Target: "c.b-infra.test", Port: 443, Priority: 20, Weight: 0})
	setA(t, e.dns, "a.b-infra.test", 3600, "1.2.3.1", "2a00:1450::1")
	ctx := context.Background()
	ts := make([]discovery.Target, 0, 8)
	as := make([]netip.Addr, 0, 8)
	if _, err := e.r.AppendSRV(ctx, ts, "b.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.AppendAddrs(ctx, as, "a.b-infra.test"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fn   func()
	}{
		{"AppendSRV", func() { _, _ = e.r.AppendSRV(ctx, ts[:0], "b.example.com") }},
		{"HasTarget", func() { _, _ = e.r.HasTarget(ctx, "b.example.com", "*.b-infra.test") }},
		{"AppendAddrs", func() { _, _ = e.r.AppendAddrs(ctx, as[:0], "a.b-infra.test") }},
		{"AppendSRV with a target down", func() {
			e.r.ReportFailure(discovery.Target{Host: "a.b-infra.test", Port: 443})
			_, _ = e.r.AppendSRV(ctx, ts[:0], "b.example.com")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
		})
	}
}

// TestConcurrentUse mixes lookups, down reports and clock changes (for
// -race): refreshes and expiries happen while lookups run.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetSRV("b.example.com", 10,
		testbed.SRVRecord{Target: "a.b-infra.test", Port: 443, Priority: 10, Weight: 1},
		testbed.SRVRecord{Target: "b.b-infra.test", Port: 443, Priority: 10, Weight: 1},
		testbed.SRVRecord{Target: "c.b-infra.test", Port: 443, Priority: 20, Weight: 1})
	setA(t, e.dns, "a.b-infra.test", 10, "1.2.3.1")
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			ts := make([]discovery.Target, 0, 3)
			for i := range 500 {
				var err error
				switch (w + i) % 5 {
				case 0:
					ts, err = e.r.AppendSRV(context.Background(), ts[:0], "b.example.com")
					if err == nil && len(ts) != 3 {
						err = fmt.Errorf("%d targets", len(ts))
					}
				case 1:
					_, err = e.r.HasTarget(context.Background(), "B.example.com", "a.b-infra.test")
				case 2:
					_, err = e.r.Addrs(context.Background(), "a.b-infra.test")
				case 3:
					e.r.ReportFailure(discovery.Target{Host: "a.b-infra.test", Port: 443})
				case 4:
					e.r.ReportSuccess(discovery.Target{Host: "a.b-infra.test", Port: 443})
					e.clock.Advance(50 * time.Millisecond)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func benchEnv(b *testing.B) *env {
	b.Helper()
	e := newEnv(b, func(c *discovery.Config) { c.Now = nil }) // the real clock
	e.dns.SetSRV("b.example.com", 3600,
		testbed.SRVRecord{Target: "a.b-infra.test", Port: 443, Priority: 10, Weight: 1},
		testbed.SRVRecord{Target: "b.b-infra.test", Port: 443, Priority: 10, Weight: 3},
		testbed.SRVRecord{Target: "c.b-infra.test", Port: 443, Priority: 20, Weight: 0})
	srv(b, e.r, "b.example.com")
	return e
}

func BenchmarkAppendSRVCached(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	dst := make([]discovery.Target, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = e.r.AppendSRV(ctx, dst[:0], "b.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSRVCachedParallel(b *testing.B) {
	e := benchEnv(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		dst := make([]discovery.Target, 0, 8)
		for pb.Next() {
			var err error
			if dst, err = e.r.AppendSRV(ctx, dst[:0], "b.example.com"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkHasTargetCached(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := e.r.HasTarget(ctx, "b.example.com", "*.b-infra.test"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// TestIdentityStaleGrace: while the DNS servers fail, an expired SRV
// answer still serves discovery (SRV, StaleFor) but proves an identity
// (HasTarget) for IdentityStaleFor past its expiry only.
func TestIdentityStaleGrace(t *testing.T) {
	const domain = "a.example.com"
	tests := []struct {
		name  string
		grace time.Duration // IdentityStaleFor
		ok    []time.Duration
		fail  []time.Duration // ages past expiry
	}{
		{"default 30s", 0, []time.Duration{time.Second, 30 * time.Second}, []time.Duration{31 * time.Second, 10 * time.Minute}},
		{"5s", 5 * time.Second, []time.Duration{time.Second, 5 * time.Second}, []time.Duration{6 * time.Second}},
		{"none", -1, nil, []time.Duration{time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *discovery.Config) {
				c.StaleFor, c.StaleRetry, c.IdentityStaleFor = time.Hour, time.Hour, tc.grace
			})
			e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "fed.a-infra.test", Port: 443})
			if ok, err := e.r.HasTarget(context.Background(), domain, "fed.a-infra.test"); !ok || err != nil {
				t.Fatalf("fresh: HasTarget = %v, %v", ok, err)
			}
			e.dns.SetFailure(domain, dns.RcodeServerFailure)
			age := time.Duration(0)
			at := func(d time.Duration) {
				e.clock.Advance(60*time.Second + d - age)
				age = 60*time.Second + d
			}
			for _, d := range tc.ok {
				at(d)
				if ok, err := e.r.HasTarget(context.Background(), domain, "fed.a-infra.test"); !ok || err != nil {
					t.Errorf("expired %v ago: HasTarget = %v, %v; want true", d, ok, err)
				}
			}
			for _, d := range tc.fail {
				at(d)
				ok, err := e.r.HasTarget(context.Background(), domain, "fed.a-infra.test")
				if ok || !errors.Is(err, discovery.ErrLookup) {
					t.Errorf("expired %v ago: HasTarget = %v, %v; want ErrLookup", d, ok, err)
				}
				// Discovery for sending still has the stale answer.
				if h := srv(t, e.r, domain)[0].Host; h != "fed.a-infra.test" {
					t.Errorf("expired %v ago: SRV target %s, want the stale one", d, h)
				}
			}
		})
	}
}
