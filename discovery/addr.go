package discovery

import "net/netip"

// The address classes of RefusedAddr, from the IANA IPv4 and IPv6
// Special-Purpose Address Registries (and the multicast ranges).

// refused4 are the IPv4 ranges never connected to: every range of the
// IPv4 registry that is not globally reachable ("False" or "N/A"), the
// whole of 192.0.0.0/24 (its two globally reachable addresses, PCP and
// TURN anycast, are service addresses, never a federation endpoint),
// multicast, and the reserved 240.0.0.0/4 with the limited broadcast.
var refused4 = prefixes(
	"0.0.0.0/8",       // "this network" (RFC 791), 0.0.0.0/32 included
	"10.0.0.0/8",      // private use (RFC 1918)
	"100.64.0.0/10",   // shared address space, CGNAT (RFC 6598)
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link local (RFC 3927)
	"172.16.0.0/12",   // private use (RFC 1918)
	"192.0.0.0/24",    // IETF protocol assignments (RFC 6890): DS-Lite, dummy, NAT64 discovery, anycast
	"192.0.2.0/24",    // documentation, TEST-NET-1 (RFC 5737)
	"192.88.99.0/24",  // deprecated 6to4 relay anycast (RFC 7526)
	"192.168.0.0/16",  // private use (RFC 1918)
	"198.18.0.0/15",   // benchmarking (RFC 2544)
	"198.51.100.0/24", // documentation, TEST-NET-2 (RFC 5737)
	"203.0.113.0/24",  // documentation, TEST-NET-3 (RFC 5737)
	"224.0.0.0/4",     // multicast (RFC 5771)
	"240.0.0.0/4",     // reserved (RFC 1112), 255.255.255.255 included
)

// global6 is IPv6 global unicast (RFC 4291): every IPv6 address outside it
// is refused (loopback, unspecified, discard-only 100::/64, the dummy
// prefix 100:0:0:1::/64, local-use NAT64 64:ff9b:1::/48, SRv6 SIDs
// 5f00::/16, unique local fc00::/7, site local fec0::/10, link local
// fe80::/10, multicast ff00::/8, and the unassigned rest), but for the
// forms that embed an IPv4 address (embedded4), judged by that address.
var global6 = netip.MustParsePrefix("2000::/3")

// refused6 are the ranges inside global unicast that are not globally
// reachable: the IETF protocol assignments 2001::/23 (Teredo 2001::/32,
// benchmarking 2001:2::/48, the deprecated ORCHID 2001:10::/28, the
// anycast service addresses of 2001:1::/48), less the globally reachable
// ranges of allowed6, and the documentation prefixes.
var refused6 = prefixes(
	"2001::/23",     // IETF protocol assignments (RFC 2928)
	"2001:db8::/32", // documentation (RFC 3849)
	"3fff::/20",     // documentation (RFC 9637)
)

// allowed6 are the globally reachable ranges inside refused6.
var allowed6 = prefixes(
	"2001:3::/32",     // AMT (RFC 7450)
	"2001:4:112::/48", // AS112-v6 (RFC 7535)
	"2001:20::/28",    // ORCHIDv2 (RFC 7343)
	"2001:30::/28",    // drone remote ID entity tags (RFC 9374)
)

// IPv6 forms that carry an IPv4 address.
var (
	// IPv4-compatible (RFC 4291, deprecated): ::a.b.c.d. Holds :: and ::1,
	// which it maps to 0.0.0.0 and 0.0.0.1 (refused).
	compat4 = netip.MustParsePrefix("::/96")
	// IPv4-translated, SIIT (RFC 2765): ::ffff:0:a.b.c.d.
	siit4 = netip.MustParsePrefix("::ffff:0:0:0/96")
	// NAT64 well-known prefix (RFC 6052): 64:ff9b::a.b.c.d.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// 6to4 (RFC 3056): 2002:AABB:CCDD::/48 for a.b.c.d = AA.BB.CC.DD.
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// RefusedAddr reports whether a is in a class that federation never
// connects to unless AllowPrivate (FED_ALLOW_PRIVATE_TARGETS): every
// range of the IANA special-purpose address registries that is not
// globally reachable (loopback, private, link-local, CGNAT, benchmarking,
// documentation, reserved, ...; see refused4, global6 and refused6),
// multicast, unspecified and broadcast; and an IPv6 address that embeds an
// IPv4 address (IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96,
// IPv4-compatible ::/96, NAT64 64:ff9b::/96, 6to4 2002::/16) when that
// IPv4 address is refused. An invalid address is refused.
func RefusedAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.WithZone("")
	if v4, ok := embedded4(a); ok {
		a = v4
	}
	if a.Is4() {
		return inAny(a, refused4)
	}
	if !global6.Contains(a) {
		return true
	}
	return inAny(a, refused6) && !inAny(a, allowed6)
}

// embedded4 returns the IPv4 address that a carries (a itself when it is
// IPv4), and whether it carries one. The IPv6 forms are those of
// RefusedAddr.
func embedded4(a netip.Addr) (netip.Addr, bool) {
	if a.Is4() {
		return a, true
	}
	b := a.As16()
	switch {
	case a.Is4In6(), compat4.Contains(a), siit4.Contains(a), nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}
