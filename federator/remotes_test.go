package federator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

func TestRemotesInFlightLimit(t *testing.T) {
	cases := []struct {
		name  string
		max   int
		takes int
		want  []bool
	}{
		{name: "no limit", max: 0, takes: 3, want: []bool{true, true, true}},
		{name: "limit two", max: 2, takes: 3, want: []bool{true, true, false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newRemotes(tc.max, 3, maxRecords, time.Now)
			for i := range tc.takes {
				_, err := l.acquire("b.example.com")
				if got := err == nil; got != tc.want[i] {
					t.Fatalf("acquire %d = %v, want %v", i, err, tc.want[i])
				}
				if err != nil && !errors.Is(err, contract.ErrTooManyRequests) {
					t.Fatalf("acquire %d: %v, want too-many-requests", i, err)
				}
			}
			if _, err := l.acquire("c.example.com"); err != nil {
				t.Fatal("another domain is limited too")
			}
		})
	}
	t.Run("release frees a slot and unpins the record", func(t *testing.T) {
		l := newRemotes(1, 3, maxRecords, time.Now)
		rec, err := l.acquire("b.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.acquire("b.example.com"); err == nil {
			t.Fatal("limit of one not applied")
		}
		l.release(rec)
		if _, pinned, _, _ := l.counts(); pinned != 0 {
			t.Fatalf("%d records pinned after release", pinned)
		}
		if _, err := l.acquire("b.example.com"); err != nil {
			t.Fatal("slot not freed")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	c := Config{MaxInFlight: 0, MaxPerRemote: -1, IdleConnTimeout: 0, MaxResponseBytes: 0}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"FED_DOMAIN", "FED_MAX_IN_FLIGHT must", "FED_MAX_IN_FLIGHT_PER_REMOTE", "FED_IDLE_CONN_TIMEOUT", "FED_MAX_RESPONSE_BYTES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestRegistryStaysBounded: 100,000 distinct remote domains, each with a
// request (answered, refused, failed or not sent), some with a 429 wait,
// a batch capability, a notification delivery that ends, or judged down,
// leave at most maxRecords records at every moment. What must stay stays:
// the remotes judged down, the destination being delivered (with its
// batch capability), the remotes waiting; the least recently used of the
// others went first.
func TestRegistryStaysBounded(t *testing.T) {
	const total = 100000
	clock := testbed.NewClock(clockStart)
	rs := newRemotes(0, 3, maxRecords, clock.Now)
	refused := contract.Errorf(contract.LabelConnectionRefused, "refused")
	outcomes := []error{nil, refused, contract.RemoteError(contract.Errorf(contract.LabelServerError, "x")), contract.Errorf(contract.LabelInvalidDomain, "x")}
	request := func(domain string, err error) {
		r, cerr := rs.acquire(domain)
		if cerr != nil {
			t.Fatalf("%s: %v", domain, cerr)
		}
		rs.outcome(r, clock.Now(), err)
		rs.release(r)
	}
	// A destination being delivered all along, which takes batches.
	const busy = "busy.example.com"
	delivering := rs.dest(busy)
	rs.setBatch(busy, 100, 1<<20)
	peak := 0
	for i := range total {
		domain := fmt.Sprintf("d%d.example.com", i)
		switch {
		case i%1000 == 0: // judged down
			for range 3 {
				request(domain, refused)
			}
		case i%10 == 0:
			request(domain, nil)
			rs.wait(domain, clock.Now().Add(time.Second))
		case i%17 == 0:
			rs.setBatch(domain, 10, 1<<20)
		case i%101 == 0: // a delivery that ends
			d := rs.dest(domain)
			request(domain, nil)
			rs.setDelivering(d.rec, false)
		default:
			request(domain, outcomes[i%len(outcomes)])
		}
		if i%100 == 0 {
			clock.Advance(10 * time.Millisecond)
		}
		records, _, _, _ := rs.counts()
		peak = max(peak, records)
		if records > maxRecords {
			t.Fatalf("after %d domains: %d records, more than %d", i+1, records, maxRecords)
		}
	}
	records, pinned, waiting, down := rs.counts()
	t.Logf("%d domains: %d records at most, %d at the end (%d pinned: %d waiting, %d down)", total, peak, records, pinned, waiting, down)
	if down != total/1000 {
		t.Errorf("%d remotes judged down, want %d", down, total/1000)
	}
	if c, ok := rs.batch(busy); !ok || c.entries != 100 || rs.findDest(busy) != delivering {
		t.Errorf("the destination being delivered lost its record (batches %+v, %v)", c, ok)
	}
	if rs.findDest(busy) == nil {
		t.Error("the destination being delivered was evicted")
	}
	if _, ok := rs.waiting(fmt.Sprintf("d%d.example.com", total-10)); !ok {
		t.Error("the last remote that asked us to wait was evicted")
	}
	last := fmt.Sprintf("d%d.example.com", total-1)
	if recs := rs.records(maxStatsRemotes); len(recs) != maxStatsRemotes || !slices.ContainsFunc(recs, func(r RemoteRecord) bool { return r.Domain == last }) {
		t.Errorf("the %d most recent records (%d) lack the last domain", maxStatsRemotes, len(recs))
	}
	for _, gone := range []string{"d1.example.com", "d17.example.com"} {
		rs.mu.Lock()
		_, kept := rs.byDomain[gone]
		rs.mu.Unlock()
		if kept {
			t.Errorf("%s, among the least recently used, is still kept", gone)
		}
	}
	clock.Advance(time.Hour)
	rs.setDelivering(delivering.rec, false)
	if _, pinned, waiting, _ := rs.counts(); waiting != 0 || pinned != total/1000 {
		t.Errorf("%d pinned, %d waiting after the waits ended: want only the %d remotes judged down", pinned, waiting, total/1000)
	}
}

// TestRegistryEviction: the least recently used record that may go is
// evicted; pinned ones stay, even past the bound, which is restored once
// they may go.
func TestRegistryEviction(t *testing.T) {
	rs := newRemotes(0, 3, 3, time.Now)
	kept := func() []string {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		var out []string
		for d := range rs.byDomain {
			out = append(out, d)
		}
		slices.Sort(out)
		return out
	}
	touch := func(domain string) {
		r, err := rs.acquire(domain)
		if err != nil {
			t.Fatal(err)
		}
		rs.release(r)
	}
	for _, d := range []string{"a", "b", "c", "a", "d"} {
		touch(d)
	}
	if got := kept(); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Errorf("kept %v, want b (least recently used) evicted", got)
	}
	var held []*remote
	for _, d := range []string{"e", "f", "g", "h"} {
		r, err := rs.acquire(d)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	if got := kept(); !slices.Equal(got, []string{"e", "f", "g", "h"}) {
		t.Errorf("kept %v, want the four in flight (past the bound)", got)
	}
	for _, r := range held {
		rs.release(r)
	}
	if got := kept(); !slices.Equal(got, []string{"f", "g", "h"}) {
		t.Errorf("kept %v after release, want the bound of 3, the least recently used out", got)
	}
}

// TestBatchCapability: what a remote says about batches is remembered in
// its record for capTTL, whatever else happens to the record (waits, down
// and up, deliveries); an answer without the headers, or a refused batch,
// forgets it.
func TestBatchCapability(t *testing.T) {
	clock := testbed.NewClock(clockStart)
	tf := newTestFederator(t, testFederatorOptions{transport: &stubRemote{}, now: clock.Now})
	n := newNotifier(tf.f, nil)
	rs := tf.f.remotes
	batches := http.Header{contract.HTTPBatchMaxEntries: {"200"}, contract.HTTPBatchMaxBytes: {"4194304"}}
	n.noteCap(benchTarget, batches)
	check := func(step string, want bool) {
		t.Helper()
		c, ok := rs.batch(benchTarget)
		if ok != want || (ok && (c.entries != 200 || c.bytes != 4194304)) {
			t.Errorf("%s: batches %+v, %v; want %v", step, c, ok, want)
		}
	}
	check("announced", true)
	refused := contract.Errorf(contract.LabelConnectionRefused, "refused")
	r, _ := rs.acquire(benchTarget)
	for range 3 {
		rs.outcome(r, clock.Now(), refused)
	}
	rs.outcome(r, clock.Now(), nil)
	rs.release(r)
	rs.wait(benchTarget, clock.Now().Add(time.Second))
	clock.Advance(2 * time.Second)
	d := rs.dest(benchTarget)
	rs.setDelivering(d.rec, false)
	for i := range maxRecords / 2 { // other remotes come and go
		r, _ := rs.acquire(fmt.Sprintf("d%d.example.com", i))
		rs.release(r)
	}
	check("after down, up, a wait, a delivery and 5,000 other remotes", true)
	clock.Advance(capTTL)
	check("after capTTL", false)
	n.noteCap(benchTarget, batches)
	check("announced again", true)
	n.noteCap(benchTarget, http.Header{})
	check("an answer without the headers", false)
	n.noteCap(benchTarget, batches)
	n.dropCap(benchTarget)
	check("a refused batch", false)
}

// BenchmarkRegistryNewDomain is a request to a remote domain never seen
// (acquire, outcome, release) with the registry full: the least recently
// used record is evicted. It costs the same with 10 records or 10,000.
func BenchmarkRegistryNewDomain(b *testing.B) {
	names := make([]string, 2*maxRecords+1)
	for i := range names {
		names[i] = fmt.Sprintf("d%d.example.com", i)
	}
	for _, n := range []int{10, maxRecords} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			rs := newRemotes(0, 3, n, time.Now)
			i := 0
			request := func() {
				r, err := rs.acquire(names[i%len(names)])
				if err != nil {
					b.Fatal(err)
				}
				rs.outcome(r, time.Now(), nil)
				rs.release(r)
				i++
			}
			for range n {
				request()
			}
			b.ReportAllocs()
			for b.Loop() {
				request() // a name last used len(names) > n requests ago: evicted
			}
			if records, _, _, _ := rs.counts(); records != n {
				b.Fatalf("%d records, want %d", records, n)
			}
		})
	}
}

// TestIdleList: the registry's list keeps its order through pushes, moves
// and removals, at either end and in the middle.
func TestIdleList(t *testing.T) {
	order := func(l *idleList) []string {
		var out []string
		for r := l.front; r != nil; r = r.next {
			out = append(out, r.domain)
		}
		var back []string
		for r := l.back; r != nil; r = r.prev {
			back = append([]string{r.domain}, back...)
		}
		if !slices.Equal(out, back) || len(out) != l.Len() {
			t.Fatalf("front to back %v, back to front %v, Len %d", out, back, l.Len())
		}
		return out
	}
	a, b, c, d := &remote{domain: "a"}, &remote{domain: "b"}, &remote{domain: "c"}, &remote{domain: "d"}
	var l idleList
	tests := []struct {
		name string
		op   func()
		want []string
	}{
		{"push", func() { l.pushFront(a); l.pushFront(b); l.pushFront(c) }, []string{"c", "b", "a"}},
		{"move the back", func() { l.moveToFront(a) }, []string{"a", "c", "b"}},
		{"move the front", func() { l.moveToFront(a) }, []string{"a", "c", "b"}},
		{"move the middle", func() { l.moveToFront(c) }, []string{"c", "a", "b"}},
		{"remove the middle", func() { l.remove(a) }, []string{"c", "b"}},
		{"remove the back", func() { l.remove(b) }, []string{"c"}},
		{"push again", func() { l.pushFront(d); l.pushFront(a) }, []string{"a", "d", "c"}},
		{"remove the front", func() { l.remove(a) }, []string{"d", "c"}},
		{"remove all", func() { l.remove(c); l.remove(d) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.op()
			if got := order(&l); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if a.listed || b.listed || c.listed || d.listed {
		t.Error("a removed record still says it is listed")
	}
}
