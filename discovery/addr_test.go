package discovery_test

import (
	"net/netip"
	"testing"

	"github.com/fedbus/fedbus/discovery"
)

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestRefusedAddr covers every range of the IANA IPv4 and IPv6
// Special-Purpose Address Registries (both ends of each), multicast, the
// IPv6 forms that embed an IPv4 address (judged by that address), and
// addresses just outside the refused ranges.
func TestRefusedAddr(t *testing.T) {
	// Ranges: both the first and the last address get the verdict.
	ranges := []struct {
		prefix  string
		name    string
		refused bool
	}{
		// IPv4 Special-Purpose Address Registry.
		{"0.0.0.0/8", "this network", true},
		{"0.0.0.0/32", "this host on this network", true},
		{"10.0.0.0/8", "private use", true},
		{"100.64.0.0/10", "shared address space", true},
		{"127.0.0.0/8", "loopback", true},
		{"169.254.0.0/16", "link local", true},
		{"172.16.0.0/12", "private use", true},
		{"192.0.0.0/24", "IETF protocol assignments", true},
		{"192.0.0.0/29", "IPv4 service continuity prefix", true},
		{"192.0.0.8/32", "IPv4 dummy address", true},
		{"192.0.0.9/32", "port control protocol anycast (a service address)", true},
		{"192.0.0.10/32", "traversal using relays around NAT anycast (a service address)", true},
		{"192.0.0.170/32", "NAT64/DNS64 discovery", true},
		{"192.0.0.171/32", "NAT64/DNS64 discovery", true},
		{"192.0.2.0/24", "documentation (TEST-NET-1)", true},
		{"192.31.196.0/24", "AS112-v4 (globally reachable)", false},
		{"192.52.193.0/24", "AMT (globally reachable)", false},
		{"192.88.99.0/24", "deprecated 6to4 relay anycast", true},
		{"192.168.0.0/16", "private use", true},
		{"192.175.48.0/24", "direct delegation AS112 service (globally reachable)", false},
		{"198.18.0.0/15", "benchmarking", true},
		{"198.51.100.0/24", "documentation (TEST-NET-2)", true},
		{"203.0.113.0/24", "documentation (TEST-NET-3)", true},
		{"240.0.0.0/4", "reserved", true},
		{"255.255.255.255/32", "limited broadcast", true},
		{"224.0.0.0/4", "multicast", true},
		// IPv6 Special-Purpose Address Registry.
		{"::1/128", "loopback", true},
		{"::/128", "unspecified", true},
		{"::ffff:0:0/96", "IPv4-mapped (ends: 0.0.0.0 and 255.255.255.255)", true},
		{"64:ff9b::/96", "NAT64 well-known prefix (ends: 0.0.0.0 and 255.255.255.255)", true},
		{"64:ff9b:1::/48", "local-use IPv4/IPv6 translation", true},
		{"100::/64", "discard-only", true},
		{"100:0:0:1::/64", "dummy IPv6 prefix", true},
		{"2001::/23", "IETF protocol assignments", true},
		{"2001::/32", "Teredo", true},
		{"2001:1::1/128", "port control protocol anycast (a service address)", true},
		{"2001:1::2/128", "traversal using relays around NAT anycast (a service address)", true},
		{"2001:1::3/128", "DNS-SD service registration protocol anycast (a service address)", true},
		{"2001:2::/48", "benchmarking", true},
		{"2001:3::/32", "AMT (globally reachable)", false},
		{"2001:4:112::/48", "AS112-v6 (globally reachable)", false},
		{"2001:10::/28", "deprecated ORCHID", true},
		{"2001:20::/28", "ORCHIDv2 (globally reachable)", false},
		{"2001:30::/28", "drone remote ID entity tags (globally reachable)", false},
		{"2001:db8::/32", "documentation", true},
		{"2002::/16", "6to4 (ends: 0.0.0.0 and 255.255.255.255)", true},
		{"2620:4f:8000::/48", "direct delegation AS112 service (globally reachable)", false},
		{"3fff::/20", "documentation", true},
		{"5f00::/16", "segment routing (SRv6) SIDs", true},
		{"fc00::/7", "unique local", true},
		{"fe80::/10", "link local", true},
		{"fec0::/10", "deprecated site local", true},
		{"ff00::/8", "multicast", true},
		{"4000::/3", "unassigned (outside global unicast)", true},
	}
	for _, r := range ranges {
		p := netip.MustParsePrefix(r.prefix)
		for _, a := range []netip.Addr{p.Addr(), lastAddr(p)} {
			t.Run(r.prefix+" "+a.String(), func(t *testing.T) {
				if got := discovery.RefusedAddr(a); got != r.refused {
					t.Errorf("RefusedAddr(%s) = %v, want %v (%s)", a, got, r.refused, r.name)
				}
			})
		}
	}

	// Single addresses: embedded IPv4 forms, zones, boundaries, public
	// addresses.
	addrs := []struct {
		addr    string
		refused bool
	}{
		// Embedded IPv4, judged by the IPv4 address.
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.1.2.3", true},
		{"::ffff:8.8.8.8", false},
		{"::ffff:0:127.0.0.1", true}, // IPv4-translated (SIIT)
		{"::ffff:0:192.168.1.1", true},
		{"::ffff:0:8.8.8.8", false},
		{"::127.0.0.1", true}, // IPv4-compatible
		{"::10.0.0.1", true},
		{"::198.18.0.1", true},
		{"::8.8.8.8", false},
		{"64:ff9b::127.0.0.1", true}, // NAT64
		{"64:ff9b::a9fe:a9fe", true}, // 169.254.169.254, the cloud metadata service
		{"64:ff9b::192.168.0.1", true},
		{"64:ff9b::100.64.0.1", true},
		{"64:ff9b::198.18.0.1", true},
		{"64:ff9b::240.0.0.1", true},
		{"64:ff9b::192.0.0.1", true},
		{"64:ff9b::808:808", false},
		{"64:ff9b:1::808:808", true},                      // local-use NAT64: refused whatever it embeds
		{"2002:7f00:1::", true},                           // 6to4 of 127.0.0.1
		{"2002:a9fe:a9fe::1", true},                       // 6to4 of 169.254.169.254
		{"2002:c0a8:101:1::1", true},                      // 6to4 of 192.168.1.1
		{"2002:c612:1::1", true},                          // 6to4 of 198.18.0.1
		{"2002:808:808::1", false},                        // 6to4 of 8.8.8.8
		{"2001:0:4136:e378::1", true},                     // Teredo
		{"fe80::1%eth0", true},                            // zone
		{"198.17.255.255", false},                         // just below 198.18.0.0/15
		{"198.20.0.0", false},                             // just above
		{"239.255.255.255", true},                         // last multicast
		{"223.255.255.255", false},                        // just below multicast
		{"100.63.255.255", false},                         // just below CGNAT
		{"100.128.0.0", false},                            // just above
		{"192.0.1.255", false},                            // just below 192.0.0.0/24
		{"192.0.3.0", false},                              // just above TEST-NET-1
		{"172.32.0.1", false},                             // just above 172.16.0.0/12
		{"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, // just below 2000::/3
		{"2001:200::1", false},                            // just above 2001::/23
		{"2001:db9::1", false},                            // just above documentation
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"2001:4860:4860::8888", false},
		{"2a00:1450:4001:80b::200e", false},
	}
	for _, tc := range addrs {
		t.Run(tc.addr, func(t *testing.T) {
			if got := discovery.RefusedAddr(netip.MustParseAddr(tc.addr)); got != tc.refused {
				t.Errorf("RefusedAddr(%s) = %v, want %v", tc.addr, got, tc.refused)
			}
		})
	}
	t.Run("zero Addr", func(t *testing.T) {
		if !discovery.RefusedAddr(netip.Addr{}) {
			t.Error("the invalid zero Addr is not refused")
		}
	})
}
