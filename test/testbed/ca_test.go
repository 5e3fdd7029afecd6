package testbed

import (
	"crypto/x509"
	"net"
	"slices"
	"testing"
	"time"
)

// TestIssueOptions checks the LeafOptions the ingress tests rely on.
func TestIssueOptions(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(o LeafOptions, dnsNames ...string) *x509.Certificate {
		t.Helper()
		l, err := ca.Issue(o, dnsNames...)
		if err != nil {
			t.Fatal(err)
		}
		return l.Cert
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	t.Run("defaults", func(t *testing.T) {
		c := issue(LeafOptions{}, "a.example.net", "b.example.net")
		if c.Subject.CommonName != "a.example.net" || !slices.Equal(c.DNSNames, []string{"a.example.net", "b.example.net"}) ||
			len(c.IPAddresses) != 0 || !slices.Equal(c.ExtKeyUsage, both) {
			t.Errorf("CN %q, DNS %v, IP %v, EKU %v", c.Subject.CommonName, c.DNSNames, c.IPAddresses, c.ExtKeyUsage)
		}
	})
	t.Run("common name without DNS names", func(t *testing.T) {
		c := issue(LeafOptions{CommonName: "a.example.net"})
		if c.Subject.CommonName != "a.example.net" || len(c.DNSNames) != 0 {
			t.Errorf("CN %q, DNS %v", c.Subject.CommonName, c.DNSNames)
		}
	})
	t.Run("IP addresses", func(t *testing.T) {
		c := issue(LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, "localhost")
		if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || c.Subject.CommonName != "localhost" {
			t.Errorf("IP %v, CN %q", c.IPAddresses, c.Subject.CommonName)
		}
	})
	t.Run("empty usages: no extended key usage", func(t *testing.T) {
		if c := issue(LeafOptions{Usages: []x509.ExtKeyUsage{}}, "a.example.net"); len(c.ExtKeyUsage) != 0 {
			t.Errorf("EKU %v", c.ExtKeyUsage)
		}
	})
	t.Run("CertStore", func(t *testing.T) {
		l, err := ca.Issue(LeafOptions{}, "a.example.net")
		if err != nil {
			t.Fatal(err)
		}
		if ca.CertStore(t, l) == nil {
			t.Fatal("no store")
		}
	})
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Errorf("Now %v, want %v", got, start.Add(time.Minute))
	}
}
