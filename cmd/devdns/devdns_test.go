package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testZone = `$ORIGIN example.com.
$TTL 60
_wire-server-federator._tcp.a IN SRV 10 5 18443 federator.a-infra.example.net.
_wire-server-federator._tcp.B IN SRV 10 5 28443 Federator.B-infra.example.net.
federator.a-infra.example.net. IN A 127.0.0.1
federator.b-infra.example.net. 30 IN A 127.0.0.1
federator.b-infra.example.net. 30 IN AAAA ::1
dot IN SRV 0 0 0 .
alias IN CNAME federator.a-infra.example.net.
`

// startServer serves zone text on a random port and stops it in cleanup.
func startServer(tb testing.TB, text string) *Server {
	tb.Helper()
	z, err := ParseZone(strings.NewReader(text), ".", "test.zone")
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	s := NewServer(z, slog.New(slog.DiscardHandler))
	if err := s.Start("127.0.0.1:0"); err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func query(tb testing.TB, addr, network, name string, qtype uint16, edns uint16) *dns.Msg {
	tb.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		tb.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestAnswers(t *testing.T) {
	s := startServer(t, testZone)
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answers []string // record data, in order
		extra   int
		soa     bool
	}{
		{"srv", "_wire-server-federator._tcp.a.example.com", dns.TypeSRV, dns.RcodeSuccess, []string{"10 5 18443 federator.a-infra.example.net."}, 1, false},
		{"srv case-insensitive", "_WIRE-server-federator._tcp.b.EXAMPLE.com", dns.TypeSRV, dns.RcodeSuccess, []string{"10 5 28443 federator.b-infra.example.net."}, 2, false},
		{"srv dot target", "dot.example.com", dns.TypeSRV, dns.RcodeSuccess, []string{"0 0 0 ."}, 0, false},
		{"a", "federator.a-infra.example.net", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.1"}, 0, false},
		{"aaaa", "federator.b-infra.example.net", dns.TypeAAAA, dns.RcodeSuccess, []string{"::1"}, 0, false},
		{"nodata", "federator.a-infra.example.net", dns.TypeAAAA, dns.RcodeSuccess, nil, 0, true},
		{"empty non-terminal", "_tcp.a.example.com", dns.TypeSRV, dns.RcodeSuccess, nil, 0, true},
		{"nxdomain", "_wire-server-federator._tcp.c.example.com", dns.TypeSRV, dns.RcodeNameError, nil, 0, true},
		{"cname", "alias.example.com", dns.TypeA, dns.RcodeSuccess, []string{"federator.a-infra.example.net."}, 0, false},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				resp := query(t, s.Addr(), network, tc.qname, tc.qtype, 0)
				if resp.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if !resp.Authoritative {
					t.Error("answer is not authoritative")
				}
				var got []string
				for _, rr := range resp.Answer {
					hdr := rr.Header().String()
					got = append(got, strings.TrimSpace(strings.TrimPrefix(rr.String(), hdr)))
					if !strings.EqualFold(rr.Header().Name, dns.Fqdn(tc.qname)) {
						t.Errorf("owner %q, want %q", rr.Header().Name, tc.qname)
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.answers) {
					t.Errorf("answers %q, want %q", got, tc.answers)
				}
				if len(resp.Extra) != tc.extra {
					t.Errorf("%d additional records, want %d", len(resp.Extra), tc.extra)
				}
				if hasSOA := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != tc.soa {
					t.Errorf("SOA in authority = %v, want %v", hasSOA, tc.soa)
				}
			})
		}
	}
}

func TestTruncation(t *testing.T) {
	var b strings.Builder
	b.WriteString("$TTL 60\n")
	for i := range 40 {
		fmt.Fprintf(&b, "_wire-server-federator._tcp.big.example.com. IN SRV 10 5 %d host-%02d.with-a-rather-long-name.example.net.\n", 1000+i, i)
	}
	s := startServer(t, b.String())
	tests := []struct {
		network   string
		edns      uint16
		truncated bool
		maxLen    int
	}{
		{"udp", 0, true, dns.MinMsgSize},
		{"udp", 4096, true, maxUDPSize},
		{"tcp", 0, false, dns.MaxMsgSize},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s-edns%d", tc.network, tc.edns), func(t *testing.T) {
			resp := query(t, s.Addr(), tc.network, "_wire-server-federator._tcp.big.example.com", dns.TypeSRV, tc.edns)
			if resp.Truncated != tc.truncated {
				t.Errorf("TC = %v, want %v", resp.Truncated, tc.truncated)
			}
			if !tc.truncated && len(resp.Answer) != 40 {
				t.Errorf("%d answers, want 40", len(resp.Answer))
			}
			resp.Compress = true // as sent on the wire
			if l := resp.Len(); l > tc.maxLen {
				t.Errorf("answer is %d bytes, over %d", l, tc.maxLen)
			}
		})
	}
}

func TestParseZoneErrors(t *testing.T) {
	tests := []struct{ name, text string }{
		{"bad record", "foo.example. IN SRV not-a-number\n"},
		{"include refused", "$INCLUDE /etc/passwd\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseZone(strings.NewReader(tc.text), ".", "bad.zone"); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestRunServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "dev.zone")
	if err := os.WriteFile(zoneFile, []byte("a.test. 60 IN A 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Pick a free port, then let run listen on it.
	probe := startServer(t, "")
	addr := probe.Addr()
	if err := probe.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", addr, "-zone", zoneFile}, func(string) string { return "" }, hup, &syncWriter{buf: &stderr})
	}()
	waitFor(t, func() bool {
		m := new(dns.Msg)
		m.SetQuestion("a.test.", dns.TypeA)
		resp, err := dns.Exchange(m, addr)
		return err == nil && len(resp.Answer) == 1
	})
	if err := os.WriteFile(zoneFile, []byte("a.test. 60 IN A 192.0.2.1\nb.test. 60 IN A 192.0.2.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- os.Interrupt // any value: run only reads the channel
	waitFor(t, func() bool {
		m := new(dns.Msg)
		m.SetQuestion("b.test.", dns.TypeA)
		resp, err := dns.Exchange(m, addr)
		return err == nil && len(resp.Answer) == 1
	})
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit status %d", code)
	}
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no zone", nil, 2},
		{"help", []string{"-h"}, 0},
		{"extra argument", []string{"-zone", "x", "y"}, 2},
		{"missing file", []string{"-zone", "/nonexistent/zone", "-listen", "127.0.0.1:0"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(context.Background(), tc.args, func(string) string { return "" }, nil, &out); code != tc.code {
				t.Errorf("exit status %d, want %d; output:\n%s", code, tc.code, out.String())
			}
		})
	}
}

func waitFor(tb testing.TB, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncWriter serialises writes of the server's logger into a buffer.
type syncWriter struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
