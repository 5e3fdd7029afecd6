package tlsconf_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fedbus/fedbus/test/testbed"
	"github.com/fedbus/fedbus/tlsconf"
)

func writeLeaf(tb testing.TB, ca *testbed.CA, dir string, opts testbed.LeafOptions) (testbed.Files, *testbed.Leaf) {
	tb.Helper()
	l, err := ca.Issue(opts, "fed.a-infra.example.net")
	if err != nil {
		tb.Fatal(err)
	}
	f, err := l.WriteFiles(dir, "a", ca.CertPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return f, l
}

func TestLoad(t *testing.T) {
	ca, err := testbed.NewCA("certs test CA")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		opts    testbed.LeafOptions
		version string
		want    error
	}{
		{name: "server and client usages", version: "1.3"},
		{name: "TLS 1.2 allowed", version: "1.2"},
		{name: "no extended usages at all", opts: testbed.LeafOptions{Usages: []x509.ExtKeyUsage{}}},
		{name: "server usage only", opts: testbed.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, want: tlsconf.ErrKeyUsage},
		{name: "client usage only", opts: testbed.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, want: tlsconf.ErrKeyUsage},
		{name: "bad version", version: "1.1", want: tlsconf.ErrBadVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := writeLeaf(t, ca, t.TempDir(), tc.opts)
			_, err := tlsconf.Load(tlsconf.Files{Cert: f.Cert, Key: f.Key, CA: f.CA}, tc.version)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("CA file without certificates", func(t *testing.T) {
		f, _ := writeLeaf(t, ca, t.TempDir(), testbed.LeafOptions{})
		if err := os.WriteFile(f.CA, []byte("nothing"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := tlsconf.Load(tlsconf.Files{Cert: f.Cert, Key: f.Key, CA: f.CA}, ""); !errors.Is(err, tlsconf.ErrNoCA) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestWatchReloadsAndKeepsAGoodCertificate replaces the files while a
// watcher runs: a new certificate is picked up, a broken one is not.
func TestWatchReloadsAndKeepsAGoodCertificate(t *testing.T) {
	ca, err := testbed.NewCA("certs test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, first := writeLeaf(t, ca, dir, testbed.LeafOptions{})
	store, err := tlsconf.Load(tlsconf.Files{Cert: f.Cert, Key: f.Key, CA: f.CA}, "")
	if err != nil {
		t.Fatal(err)
	}
	if store.Leaf().SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatal("wrong certificate loaded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { store.Watch(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler)) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	_, second := writeLeaf(t, ca, dir, testbed.LeafOptions{})
	deadline := time.Now().Add(5 * time.Second)
	for store.Leaf().SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate was not loaded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The server configuration hands out the new certificate.
	cfg, err := store.ServerConfig().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil || len(cfg.Certificates) != 1 {
		t.Fatalf("server config: %v", err)
	}
	if err := os.WriteFile(f.Cert, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.Reload(); err == nil {
		t.Fatal("a broken certificate file must fail to load")
	}
	if store.Leaf().SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatal("a broken file replaced the certificate in service")
	}
}
