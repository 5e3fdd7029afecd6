package discovery

import "net/netip"

// Refused IPv4 ranges that netip.Addr has no predicate for.
var (
	cgnat       = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598 shared address space
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")     // RFC 791 "this network"
	siteLocal   = netip.MustParsePrefix("fec0::/10")     // deprecated IPv6 site-local
	broadcast   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// RefusedAddr reports whether a is in a class that federation never
// connects to unless AllowPrivate (FED_ALLOW_PRIVATE_TARGETS): loopback,
// private (RFC 1918, fc00::/7, fec0::/10), link-local (169.254/16,
// fe80::/10), CGNAT (100.64/10), multicast, unspecified, 0/8 and the
// broadcast address, and the IPv4-mapped IPv6 forms (::ffff:a.b.c.d) of
// the IPv4 ones. An invalid address is refused.
func RefusedAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.Unmap().WithZone("")
	return a.IsLoopback() ||
		a.IsPrivate() ||
		a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() ||
		a.IsUnspecified() ||
		cgnat.Contains(a) ||
		thisNetwork.Contains(a) ||
		siteLocal.Contains(a) ||
		a == broadcast
}
