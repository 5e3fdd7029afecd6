package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// SRVService is the owner-name prefix of the federation SRV record of a
// domain: the record of b.example.com is
// _wire-server-federator._tcp.b.example.com.
const SRVService = "_wire-server-federator._tcp."

// DropQuery, given to SetFailure as the rcode, makes the server read the
// queries for the name and never answer them (a resolver that times out).
const DropQuery = -1

// DefaultNegativeTTL is the SOA TTL and SOA minimum of negative answers until
// SetNegativeTTL changes it.
const DefaultNegativeTTL = 30

// ednsSize is the UDP payload size the server advertises in its OPT record.
const ednsSize = 1232

// SRVRecord is one SRV record served by DNS. Target "." is allowed and
// means "service decidedly not available" (RFC 2782).
type SRVRecord struct {
	Target   string
	Port     uint16
	Priority uint16
	Weight   uint16
}

// SRVName returns the owner name (lower case, no trailing dot) of the
// federation SRV record of domain. A name that already starts with "_" is
// returned as it is (lower-cased).
func SRVName(domain string) string {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	if strings.HasPrefix(d, "_") {
		return d
	}
	return SRVService + d
}

type queryKey struct {
	name  string
	qtype uint16
}

// DNS is an in-process authoritative DNS server on 127.0.0.1, serving UDP
// and TCP on the same port. It answers from records set with SetSRV and
// SetA, gives NXDOMAIN with an SOA in the authority section for unknown
// names (NODATA for a known name without records of the asked type),
// truncates UDP answers to the client's EDNS0 size (512 without EDNS0) and
// counts the queries it receives. It can be stopped and started again on
// the same port. All methods are safe for concurrent use.
type DNS struct {
	life    sync.Mutex // serialises Start and Stop
	addr    string     // fixed by the first Start
	udp     *dns.Server
	tcp     *dns.Server
	stop    chan struct{}
	wg      sync.WaitGroup
	running bool

	mu      sync.Mutex
	rrs     map[string]map[uint16][]dns.RR // lower-case FQDN -> type -> records
	fail    map[string]int                 // lower-case FQDN -> rcode or DropQuery
	negTTL  uint32
	delay   time.Duration
	queries map[queryKey]int
	total   int
	ad      bool // SetAuthenticData
	doBit   int  // queries with the EDNS0 DO bit
}

// NewDNS returns a stopped server; Start starts it. It needs no
// testing.TB, so the demo can use it.
func NewDNS() (*DNS, error) {
	return &DNS{
		rrs:     make(map[string]map[uint16][]dns.RR),
		fail:    make(map[string]int),
		negTTL:  DefaultNegativeTTL,
		queries: make(map[queryKey]int),
	}, nil
}

// StartDNS starts a server on 127.0.0.1 with a random port, fails tb when it
// cannot, and stops the server in tb's cleanup.
func StartDNS(tb testing.TB) *DNS {
	tb.Helper()
	d, err := NewDNS()
	if err != nil {
		tb.Fatalf("testbed dns: %v", err)
	}
	if err := d.Start(); err != nil {
		tb.Fatalf("testbed dns: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Stop(); err != nil {
			tb.Errorf("testbed dns: stop: %v", err)
		}
	})
	return d
}

// Addr returns the server's "127.0.0.1:port" (empty before the first Start).
func (d *DNS) Addr() string {
	d.life.Lock()
	defer d.life.Unlock()
	return d.addr
}

// Start starts serving. The first Start picks a random port free for both
// UDP and TCP; a later Start (after Stop) uses the same port again.
func (d *DNS) Start() error {
	d.life.Lock()
	defer d.life.Unlock()
	if d.running {
		return errors.New("testbed dns: already running")
	}
	pc, ln, err := d.listen()
	if err != nil {
		return err
	}
	d.addr = pc.LocalAddr().String()
	d.mu.Lock()
	d.stop = make(chan struct{})
	d.mu.Unlock()
	h := dns.HandlerFunc(d.serve)
	udpStarted, tcpStarted := make(chan struct{}), make(chan struct{})
	d.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(udpStarted) }}
	d.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { close(tcpStarted) }}
	errc := make(chan error, 2)
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			errc <- s.ActivateAndServe()
		}()
	}
	for _, started := range []chan struct{}{udpStarted, tcpStarted} {
		select {
		case <-started:
		case err := <-errc:
			// One server failed to start: tear down whatever runs.
			_ = d.udp.Shutdown()
			_ = d.tcp.Shutdown()
			_ = pc.Close()
			_ = ln.Close()
			close(d.stop)
			d.wg.Wait()
			return fmt.Errorf("testbed dns: serve: %w", err)
		}
	}
	d.running = true
	return nil
}

// listen opens the UDP and TCP sockets: on d.addr when it is set, else on a
// random port of 127.0.0.1 that is free for both.
func (d *DNS) listen() (net.PacketConn, net.Listener, error) {
	if d.addr != "" {
		pc, err := net.ListenPacket("udp", d.addr)
		if err != nil {
			return nil, nil, fmt.Errorf("testbed dns: listen udp %s: %w", d.addr, err)
		}
		ln, err := net.Listen("tcp", d.addr)
		if err != nil {
			_ = pc.Close()
			return nil, nil, fmt.Errorf("testbed dns: listen tcp %s: %w", d.addr, err)
		}
		return pc, ln, nil
	}
	var lastErr error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("testbed dns: listen udp: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, ln, nil
		}
		lastErr = err
		_ = pc.Close()
	}
	return nil, nil, fmt.Errorf("testbed dns: no port free for both udp and tcp: %w", lastErr)
}

// Stop stops serving; queries sent afterwards are refused by the kernel
// (closed port). Records and counters are kept, and Start serves them again
// on the same port. Stopping a stopped server does nothing.
func (d *DNS) Stop() error {
	d.life.Lock()
	defer d.life.Unlock()
	if !d.running {
		return nil
	}
	d.running = false
	close(d.stop) // releases delayed answers
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := errors.Join(d.udp.ShutdownContext(ctx), d.tcp.ShutdownContext(ctx))
	d.wg.Wait()
	if err != nil {
		return fmt.Errorf("testbed dns: stop: %w", err)
	}
	return nil
}

// fqdn returns the map key of a name: lower case with a trailing dot.
func fqdn(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}

// SetSRV replaces the federation SRV records of domain (see SRVName) with
// targets. Without targets the name exists with no SRV record (an empty
// NOERROR answer).
func (d *DNS) SetSRV(domain string, ttl uint32, targets ...SRVRecord) {
	owner := fqdn(SRVName(domain))
	rrs := make([]dns.RR, 0, len(targets))
	for _, t := range targets {
		rrs = append(rrs, &dns.SRV{
			Hdr:      dns.RR_Header{Name: owner, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
			Priority: t.Priority,
			Weight:   t.Weight,
			Port:     t.Port,
			Target:   dns.Fqdn(strings.ToLower(t.Target)),
		})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setLocked(owner, dns.TypeSRV, rrs)
}

// SetA replaces the A and AAAA records of host with ips (each one an A or
// an AAAA record by its address family; an IPv4-mapped IPv6 address such
// as ::ffff:127.0.0.1 stays an AAAA record). Without ips the name exists
// with no address. It fails, changing nothing, on an invalid address.
func (d *DNS) SetA(host string, ttl uint32, ips ...string) error {
	addrs := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("testbed dns: SetA %s: %w", host, err)
		}
		addrs = append(addrs, a)
	}
	d.SetAddrs(host, ttl, addrs...)
	return nil
}

// SetAddrs is SetA with parsed addresses.
func (d *DNS) SetAddrs(host string, ttl uint32, addrs ...netip.Addr) {
	owner := fqdn(host)
	var a, aaaa []dns.RR
	for _, ip := range addrs {
		if ip.Is4() {
			a = append(a, &dns.A{
				Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
				A:   ip.AsSlice(),
			})
			continue
		}
		aaaa = append(aaaa, &dns.AAAA{
			Hdr:  dns.RR_Header{Name: owner, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl},
			AAAA: ip.AsSlice(),
		})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setLocked(owner, dns.TypeA, a)
	d.setLocked(owner, dns.TypeAAAA, aaaa)
}

func (d *DNS) setLocked(owner string, qtype uint16, rrs []dns.RR) {
	m := d.rrs[owner]
	if m == nil {
		m = make(map[uint16][]dns.RR)
		d.rrs[owner] = m
	}
	m[qtype] = rrs
}

// Remove deletes every record of name and of its federation SRV name
// (SRVName), and their failures: the names get NXDOMAIN again.
func (d *DNS) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range []string{fqdn(name), fqdn(SRVName(name))} {
		delete(d.rrs, n)
		delete(d.fail, n)
	}
}

// SetNegativeTTL sets the SOA TTL and SOA minimum of negative answers
// (NXDOMAIN and NODATA).
func (d *DNS) SetNegativeTTL(ttl uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.negTTL = ttl
}

// SetFailure makes every query for name, and for its federation SRV name,
// fail with rcode (for example dns.RcodeServerFailure or
// dns.RcodeRefused), or go unanswered with DropQuery. Rcode 0 (success)
// removes the failure.
func (d *DNS) SetFailure(name string, rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := fqdn(name)
	if rcode == dns.RcodeSuccess {
		delete(d.fail, n)
		return
	}
	d.fail[n] = rcode
}

// SetAuthenticData makes the server act as a validating resolver whose
// answers are DNSSEC-authentic (on) or not (off, the default): with on,
// an answer (positive or negative, not a failure) carries the AD flag when
// the query set the EDNS0 DO bit or the AD flag, as RFC 6840 section 5.7
// prescribes; no signatures are served.
func (d *DNS) SetAuthenticData(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ad = on
}

// DOQueries returns how many queries the server received with the EDNS0
// DO bit set.
func (d *DNS) DOQueries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.doBit
}

// SetDelay delays every answer by delay (0 answers at once). Stop releases
// delayed answers early.
func (d *DNS) SetDelay(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.delay = delay
}

// Queries returns how many queries for name and qtype the server received
// over UDP and TCP. name is case-insensitive, with or without a trailing
// dot; for dns.TypeSRV a name not starting with "_" is the domain and
// counts the queries of its federation SRV name (see SRVName).
func (d *DNS) Queries(name string, qtype uint16) int {
	n := name
	if qtype == dns.TypeSRV {
		n = SRVName(name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[queryKey{fqdn(n), qtype}]
}

// TotalQueries returns how many queries the server received.
func (d *DNS) TotalQueries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// ResetQueries sets all query counters to zero.
func (d *DNS) ResetQueries() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.queries)
	d.total = 0
}

// failureLocked returns the failure set for name or for the domain of an
// SRV name, and whether there is one.
func (d *DNS) failureLocked(name string) (int, bool) {
	if rc, ok := d.fail[name]; ok {
		return rc, true
	}
	if rest, ok := strings.CutPrefix(name, SRVService); ok {
		if rc, ok := d.fail[rest]; ok {
			return rc, true
		}
	}
	return 0, false
}

// serve answers one query.
func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := fqdn(q.Name)

	d.mu.Lock()
	d.queries[queryKey{name, q.Qtype}]++
	d.total++
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	if do {
		d.doBit++
	}
	rcode, failing := d.failureLocked(name)
	delay, negTTL, stop := d.delay, d.negTTL, d.stop
	authentic := d.ad && (do || req.AuthenticatedData)
	var answer []dns.RR
	records, exists := d.rrs[name]
	if exists {
		for _, rr := range records[q.Qtype] {
			c := dns.Copy(rr)
			c.Header().Name = q.Name // echo the asker's case
			answer = append(answer, c)
		}
	}
	d.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return
		}
	}
	switch {
	case failing && rcode == DropQuery:
		return
	case failing:
		resp.SetRcode(req, rcode)
	case !exists:
		resp.SetRcode(req, dns.RcodeNameError)
		resp.Ns = []dns.RR{soa(name, negTTL)}
	default:
		resp.SetReply(req)
		resp.Answer = answer
		if len(answer) == 0 {
			resp.Ns = []dns.RR{soa(name, negTTL)}
		}
	}
	resp.Authoritative = !failing
	resp.RecursionAvailable = true
	resp.AuthenticatedData = authentic && !failing

	size := dns.MinMsgSize
	if opt != nil {
		if opt.Version() != 0 {
			resp = new(dns.Msg)
			resp.SetRcode(req, dns.RcodeBadVers)
		}
		if int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.SetEdns0(ednsSize, do)
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// soa returns the SOA record of negative answers for name: it is owned by
// the name's last two labels, with TTL and minimum ttl.
func soa(name string, ttl uint32) dns.RR {
	labels := dns.SplitDomainName(name)
	zone := "."
	if n := len(labels); n >= 2 {
		zone = labels[n-2] + "." + labels[n-1] + "."
	} else if n == 1 {
		zone = labels[0] + "."
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns.testbed.",
		Mbox:    "hostmaster.testbed.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
}
