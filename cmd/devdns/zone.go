package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// defaultNegativeTTL is the TTL and minimum of the SOA record synthesised
// for negative answers when the zone file has no SOA.
const defaultNegativeTTL = 30

// Zone is the immutable set of records devdns answers from. Names are kept
// lower-case and fully qualified.
type Zone struct {
	rrs   map[string]map[uint16][]dns.RR
	names map[string]bool // every owner name and every ancestor below the root
	soa   *dns.SOA
	count int
}

// LoadZoneFile parses a zone file (RFC 1035 master file format; $ORIGIN
// and $TTL are supported, $INCLUDE is not). origin is the initial origin
// for relative names ("." when empty).
func LoadZoneFile(path, origin string) (*Zone, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load zone: %w", err)
	}
	defer f.Close()
	z, err := ParseZone(f, origin, path)
	if err != nil {
		return nil, fmt.Errorf("load zone: %w", err)
	}
	return z, nil
}

// ParseZone parses zone file text from r; file names it in errors.
func ParseZone(r io.Reader, origin, file string) (*Zone, error) {
	if origin == "" {
		origin = "."
	}
	z := &Zone{rrs: make(map[string]map[uint16][]dns.RR), names: make(map[string]bool)}
	zp := dns.NewZoneParser(r, dns.Fqdn(origin), file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		z.add(rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	if z.soa == nil {
		z.soa = &dns.SOA{
			Hdr:     dns.RR_Header{Name: dns.Fqdn(strings.ToLower(origin)), Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: defaultNegativeTTL},
			Ns:      "devdns.invalid.",
			Mbox:    "hostmaster.devdns.invalid.",
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  defaultNegativeTTL,
		}
	}
	return z, nil
}

func (z *Zone) add(rr dns.RR) {
	h := rr.Header()
	h.Name = strings.ToLower(h.Name)
	switch v := rr.(type) {
	case *dns.SRV:
		v.Target = strings.ToLower(v.Target)
	case *dns.CNAME:
		v.Target = strings.ToLower(v.Target)
	case *dns.SOA:
		if z.soa == nil {
			z.soa = v
		}
	}
	m := z.rrs[h.Name]
	if m == nil {
		m = make(map[uint16][]dns.RR)
		z.rrs[h.Name] = m
	}
	m[h.Rrtype] = append(m[h.Rrtype], rr)
	z.count++
	// Mark the name and its ancestors as existing, so that an empty
	// non-terminal (such as _tcp.b.example.com) gets NODATA, not NXDOMAIN.
	for name := h.Name; name != "." && name != ""; {
		z.names[name] = true
		i := strings.IndexByte(name, '.')
		if i < 0 || i == len(name)-1 {
			break
		}
		name = name[i+1:]
	}
}

// Len returns the number of records in the zone.
func (z *Zone) Len() int { return z.count }

// Answer builds the response to a query: the records of the asked name and
// type (CNAME records of the name when it has no record of the type), the
// addresses of SRV targets in the additional section, NODATA for a known
// name without records of the type and NXDOMAIN for an unknown name, both
// with the SOA in the authority section. The response is authoritative.
func (z *Zone) Answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp
	}
	if len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp
	}
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	byType, known := z.rrs[name]
	switch {
	case known && q.Qtype == dns.TypeANY:
		for _, rrs := range byType {
			resp.Answer = append(resp.Answer, copyRRs(rrs, q.Name)...)
		}
	case known && len(byType[q.Qtype]) > 0:
		resp.Answer = copyRRs(byType[q.Qtype], q.Name)
	case known && len(byType[dns.TypeCNAME]) > 0:
		resp.Answer = copyRRs(byType[dns.TypeCNAME], q.Name)
	}
	if len(resp.Answer) > 0 {
		if q.Qtype == dns.TypeSRV {
			resp.Extra = z.targetAddrs(resp.Answer)
		}
		return resp
	}
	if !z.names[name] {
		resp.Rcode = dns.RcodeNameError
	}
	resp.Ns = []dns.RR{dns.Copy(z.soa)}
	return resp
}

// targetAddrs returns the A and AAAA records of the SRV targets in answer.
func (z *Zone) targetAddrs(answer []dns.RR) []dns.RR {
	var extra []dns.RR
	for _, rr := range answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			extra = append(extra, copyRRs(z.rrs[srv.Target][t], "")...)
		}
	}
	return extra
}

// copyRRs copies records; owner, when set, replaces their name (so the
// answer echoes the question's spelling, as 0x20-randomising resolvers
// expect).
func copyRRs(rrs []dns.RR, owner string) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		c := dns.Copy(rr)
		if owner != "" {
			c.Header().Name = owner
		}
		out = append(out, c)
	}
	return out
}
