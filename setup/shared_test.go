package setup

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestOpenErrorHidesNATSPassword: when the NATS connection fails, the
// error of Open names the URL with its password or token masked.
func TestOpenErrorHidesNATSPassword(t *testing.T) {
	ca, err := testbed.NewCA("setup CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a-infra.example.net")
	if err != nil {
		t.Fatal(err)
	}
	files, err := leaf.WriteFiles(t.TempDir(), "a", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // nothing listens there any more
	const secret = "s3cret-Passw0rd"
	for _, tc := range []struct{ name, url string }{
		{"user and password", "nats://fedbus:" + secret + "@127.0.0.1:" + port},
		{"token", "nats://" + secret + "@127.0.0.1:" + port},
		{"unparsable URL", "nats://fedbus:" + secret + "@127.0.0.1:notaport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.DefaultCommon()
			c.Domain, c.NATSURL, c.DNSServer = "a.example.com", tc.url, "127.0.0.1:53"
			c.TLSCert, c.TLSKey, c.TLSCA = files.Cert, files.Key, files.CA
			sh, err := Open(c, "test", slog.New(slog.DiscardHandler))
			if err == nil {
				sh.NATS.Close()
				t.Fatal("Open succeeded")
			}
			for e := err; e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), secret) {
					t.Fatalf("error %q contains the password", e)
				}
			}
		})
	}
}
