package testbed

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ask sends one query to d over network ("udp" or "tcp"), with EDNS0 size
// edns when it is not 0.
func ask(tb testing.TB, d *DNS, network, name string, qtype uint16, edns uint16) *dns.Msg {
	tb.Helper()
	resp, err := exchange(d, network, name, qtype, edns, 2*time.Second)
	if err != nil {
		tb.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func exchange(d *DNS, network, name string, qtype uint16, edns uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns != 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: timeout}
	resp, _, err := c.Exchange(m, d.Addr())
	return resp, err
}

func TestDNSAnswers(t *testing.T) {
	d := StartDNS(t)
	d.SetSRV("b.example.com", 60,
		SRVRecord{Target: "fed.b-infra.test.", Port: 443, Priority: 10, Weight: 5},
		SRVRecord{Target: "Backup.B-Infra.test", Port: 8443, Priority: 20, Weight: 0})
	d.SetSRV("dot.example.com", 60, SRVRecord{Target: "."})
	d.SetSRV("empty.example.com", 60)
	if err := d.SetA("fed.b-infra.test", 30, "192.0.2.1", "2001:db8::1", "::ffff:127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetA("bad.test", 30, "not-an-ip"); err == nil {
		t.Error("SetA with an invalid address: no error")
	}
	d.SetNegativeTTL(17)

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answers []string // rdata, in order
		soaMin  uint32   // expected SOA minimum in authority, 0 = none
	}{
		{"srv", "_wire-server-federator._tcp.b.example.com", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"10 5 443 fed.b-infra.test.", "20 0 8443 backup.b-infra.test."}, 0},
		{"srv case-insensitive", "_WIRE-server-federator._tcp.B.Example.COM", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"10 5 443 fed.b-infra.test.", "20 0 8443 backup.b-infra.test."}, 0},
		{"srv dot", "_wire-server-federator._tcp.dot.example.com", dns.TypeSRV, dns.RcodeSuccess, []string{"0 0 0 ."}, 0},
		{"srv empty is NODATA", "_wire-server-federator._tcp.empty.example.com", dns.TypeSRV, dns.RcodeSuccess, nil, 17},
		{"a", "fed.b-infra.test", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.1"}, 0},
		{"aaaa incl. mapped", "fed.b-infra.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::1", "::ffff:127.0.0.1"}, 0},
		{"nodata for other type", "fed.b-infra.test", dns.TypeMX, dns.RcodeSuccess, nil, 17},
		{"nxdomain", "nope.example.com", dns.TypeA, dns.RcodeNameError, nil, 17},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				resp := ask(t, d, network, tc.qname, tc.qtype, 0)
				if resp.Rcode != tc.rcode {
					t.Fatalf("%s: rcode %s, want %s", network, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				var got []string
				for _, rr := range resp.Answer {
					if !strings.EqualFold(rr.Header().Name, dns.Fqdn(tc.qname)) {
						t.Errorf("%s: owner %q, want the question's %q", network, rr.Header().Name, tc.qname)
					}
					got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.answers) {
					t.Errorf("%s: answers %q, want %q", network, got, tc.answers)
				}
				var soaMin uint32
				for _, rr := range resp.Ns {
					if soa, ok := rr.(*dns.SOA); ok {
						soaMin = soa.Minttl
					}
				}
				if soaMin != tc.soaMin {
					t.Errorf("%s: SOA minimum %d, want %d", network, soaMin, tc.soaMin)
				}
			}
		})
	}
}

func TestDNSTruncation(t *testing.T) {
	d := StartDNS(t)
	var recs []SRVRecord
	for i := range 60 {
		recs = append(recs, SRVRecord{Target: fmt.Sprintf("host-%02d.b-infra.test", i), Port: 443, Priority: 10, Weight: 1})
	}
	d.SetSRV("b.example.com", 60, recs...)
	name := SRVName("b.example.com")

	tests := []struct {
		name      string
		network   string
		edns      uint16
		truncated bool
		maxLen    int
	}{
		{"udp without edns0", "udp", 0, true, dns.MinMsgSize},
		{"udp with edns0 1232", "udp", 1232, true, 1232},
		{"udp with edns0 65000", "udp", 65000, false, 65000},
		{"tcp", "tcp", 0, false, dns.MaxMsgSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := ask(t, d, tc.network, name, dns.TypeSRV, tc.edns)
			if resp.Truncated != tc.truncated {
				t.Errorf("TC = %v, want %v", resp.Truncated, tc.truncated)
			}
			if !tc.truncated && len(resp.Answer) != 60 {
				t.Errorf("%d answers, want 60", len(resp.Answer))
			}
			if tc.truncated && len(resp.Answer) >= 60 {
				t.Errorf("truncated answer has all %d records", len(resp.Answer))
			}
			resp.Compress = true // as sent
			if l := resp.Len(); l > tc.maxLen {
				t.Errorf("answer is %d bytes, over %d", l, tc.maxLen)
			}
		})
	}
}

func TestDNSFailuresAndCounts(t *testing.T) {
	d := StartDNS(t)
	d.SetSRV("b.example.com", 60, SRVRecord{Target: "fed.b-infra.test", Port: 443})
	d.SetFailure("b.example.com", dns.RcodeServerFailure)
	if rc := ask(t, d, "udp", SRVName("b.example.com"), dns.TypeSRV, 0).Rcode; rc != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[rc])
	}
	d.SetFailure("B.example.com.", dns.RcodeSuccess)
	if rc := ask(t, d, "udp", SRVName("b.example.com"), dns.TypeSRV, 0).Rcode; rc != dns.RcodeSuccess {
		t.Errorf("after clearing the failure: rcode %s", dns.RcodeToString[rc])
	}
	d.SetFailure("drop.example.com", DropQuery)
	if _, err := exchange(d, "udp", "drop.example.com", dns.TypeA, 0, 200*time.Millisecond); err == nil {
		t.Error("dropped query got an answer")
	}
	d.Remove("b.example.com")
	if rc := ask(t, d, "tcp", SRVName("b.example.com"), dns.TypeSRV, 0).Rcode; rc != dns.RcodeNameError {
		t.Errorf("after Remove: rcode %s, want NXDOMAIN", dns.RcodeToString[rc])
	}

	if got := d.Queries("B.EXAMPLE.COM", dns.TypeSRV); got != 3 {
		t.Errorf("Queries(domain, SRV) = %d, want 3", got)
	}
	if got := d.Queries("_wire-server-federator._tcp.b.example.com.", dns.TypeSRV); got != 3 {
		t.Errorf("Queries(srv name, SRV) = %d, want 3", got)
	}
	if got := d.Queries("drop.example.com", dns.TypeA); got < 1 {
		t.Errorf("Queries(drop) = %d, want >= 1", got)
	}
	if got := d.TotalQueries(); got < 4 {
		t.Errorf("TotalQueries = %d, want >= 4", got)
	}
	d.ResetQueries()
	if got := d.TotalQueries(); got != 0 {
		t.Errorf("after ResetQueries: %d", got)
	}
}

func TestDNSStopStart(t *testing.T) {
	d, err := NewDNS()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	if err := d.Start(); err == nil {
		t.Error("second Start of a running server: no error")
	}
	if err := d.SetA("fed.b-infra.test", 30, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	addr := d.Addr()
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q", addr)
	}
	ask(t, d, "udp", "fed.b-infra.test", dns.TypeA, 0)

	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := exchange(d, "udp", "fed.b-infra.test", dns.TypeA, 0, 500*time.Millisecond); err == nil {
		t.Error("stopped server answered over udp")
	}
	if _, err := exchange(d, "tcp", "fed.b-infra.test", dns.TypeA, 0, 500*time.Millisecond); err == nil {
		t.Error("stopped server answered over tcp")
	}

	if err := d.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if d.Addr() != addr {
		t.Errorf("restarted on %s, want %s", d.Addr(), addr)
	}
	for _, network := range []string{"udp", "tcp"} {
		if resp := ask(t, d, network, "fed.b-infra.test", dns.TypeA, 0); len(resp.Answer) != 1 {
			t.Errorf("%s after restart: %d answers", network, len(resp.Answer))
		}
	}
	if got := d.Queries("fed.b-infra.test", dns.TypeA); got != 3 {
		t.Errorf("Queries = %d, want 3 (counters survive a restart)", got)
	}
}

func TestDNSDelayReleasedByStop(t *testing.T) {
	d := StartDNS(t)
	d.SetDelay(time.Hour)
	done := make(chan error, 1)
	go func() {
		_, err := exchange(d, "udp", "x.test", dns.TypeA, 0, 500*time.Millisecond)
		done <- err
	}()
	for d.TotalQueries() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Stop took %v with a delayed answer pending", el)
	}
	if err := <-done; err == nil {
		t.Error("delayed query answered after Stop")
	}
}

func TestDNSAuthenticData(t *testing.T) {
	d := StartDNS(t)
	d.SetSRV("b.example.com", 60, SRVRecord{Target: "fed.b-infra.test", Port: 443})
	d.SetFailure("servfail.example.com", dns.RcodeServerFailure)
	tests := []struct {
		name   string
		on     bool
		qname  string
		do, ad bool // bits of the query
		want   bool // AD in the answer
	}{
		{"off, DO query", false, "b.example.com", true, false, false},
		{"on, DO query", true, "b.example.com", true, false, true},
		{"on, AD query", true, "b.example.com", false, true, true},
		{"on, plain query", true, "b.example.com", false, false, false},
		{"on, NXDOMAIN", true, "nx.example.com", true, false, true},
		{"on, failure", true, "servfail.example.com", true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d.SetAuthenticData(tc.on)
			before := d.DOQueries()
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(SRVName(tc.qname)), dns.TypeSRV)
			m.AuthenticatedData = tc.ad
			m.SetEdns0(1232, tc.do)
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			resp, _, err := c.Exchange(m, d.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if resp.AuthenticatedData != tc.want {
				t.Errorf("AD %v, want %v (rcode %s)", resp.AuthenticatedData, tc.want, dns.RcodeToString[resp.Rcode])
			}
			if opt := resp.IsEdns0(); opt == nil || opt.Do() != tc.do {
				t.Errorf("answer OPT %v, want DO echoed as %v", opt, tc.do)
			}
			wantDO := before
			if tc.do {
				wantDO++
			}
			if got := d.DOQueries(); got != wantDO {
				t.Errorf("DOQueries %d, want %d", got, wantDO)
			}
		})
	}
}
