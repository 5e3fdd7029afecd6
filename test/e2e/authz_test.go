package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestDynamicRemotesAndRules drives B's federation config through its
// key-value bucket (as fedctl does): a remote added at run time may call,
// per-RPC rules refuse with federation-denied before anything reaches B's
// bus, and removing the remote stops it again.
func TestDynamicRemotesAndRules(t *testing.T) {
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	dir := t.TempDir()
	a := startBackend(t, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: dns, Dir: dir, Strategy: "allow-all"})
	b := startBackend(t, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: dns, Dir: dir, Strategy: "allow-list", KVBucket: "fedbus"})
	serve(t, b, "brig", component)
	var published atomic.Int32
	sub, err := b.NATS.Subscribe("fed.in.>", func(*nats.Msg) { published.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	js, err := jetstream.New(b.NATS)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := policy.OpenStore(ctx, js, "fedbus", 0)
	if err != nil {
		t.Fatal(err)
	}
	call := func(rpc string) error {
		_, err := a.Client("/t").Call(ctx, domainB, "brig", rpc, []byte(`{}`))
		return err
	}
	refusedRemotely := func(err error) bool {
		var fe *contract.Error
		return errors.As(err, &fe) && fe.Label == contract.LabelRemoteError && fe.Inner != nil && fe.Inner.Label == contract.LabelFederationDenied
	}
	if err := call("echo"); !refusedRemotely(err) {
		t.Fatalf("before the remote is added: %v", err)
	}
	if _, err := store.Add(ctx, domainA, policy.Remote{Rules: policy.Rules{"brig": {"echo"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the added remote to be allowed", func() bool { return call("echo") == nil })
	before := published.Load()
	if err := call("whoami"); !refusedRemotely(err) {
		t.Fatalf("rpc outside the rules: %v", err)
	}
	if err := b.NATS.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := published.Load(); got != before {
		t.Fatalf("a refused call reached B's bus (%d messages)", got-before)
	}
	if _, err := store.Remove(ctx, domainA); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the removed remote to be refused", func() bool { return refusedRemotely(call("echo")) })
}

// TestCertificateRotationUnderLoad replaces B's certificate files (the
// Kubernetes way: a new directory and an atomic symlink swap) while A keeps
// calling B: no call fails, and new connections get the new certificate.
func TestCertificateRotationUnderLoad(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "brig", component)
	// Reinstall B's files behind a ..data symlink, as a Kubernetes secret
	// volume has them, and restart nothing: the watcher follows the links.
	oldLeaf, err := w.ca.Issue(testbed.LeafOptions{}, infraB)
	if err != nil {
		t.Fatal(err)
	}
	newLeaf, err := w.ca.Issue(testbed.LeafOptions{}, infraB)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	install := func(name string, l *testbed.Leaf) {
		t.Helper()
		d := filepath.Join(secret, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WriteFiles(d, "tls", w.ca.CertPEM); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(secret, "..data_tmp")
		_ = os.Remove(tmp)
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(secret, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	install("v1", oldLeaf)
	for _, f := range []string{w.b.Files.Cert, w.b.Files.Key, w.b.Files.CA} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range map[string]string{"tls.crt": w.b.Files.Cert, "tls.key": w.b.Files.Key, "tls-ca.crt": w.b.Files.CA} {
		if err := os.Symlink(filepath.Join(secret, "..data", src), dst); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "B to serve the first rotated certificate", func() bool { return servedSerial(t, w) == oldLeaf.Cert.SerialNumber.String() })

	// Load: a few callers until told to stop; count failures.
	var failures, calls atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := w.a.Client("/t").Call(ctx, domainB, "brig", "echo", []byte(`1`))
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("call failed during rotation: %v", err)
				}
			}
		}()
	}
	install("v2", newLeaf)
	waitFor(t, 10*time.Second, "B to serve the new certificate", func() bool { return servedSerial(t, w) == newLeaf.Cert.SerialNumber.String() })
	// A broken new file keeps the new certificate in service.
	if err := os.WriteFile(filepath.Join(secret, "v2", "tls.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // longer than the reload interval: the broken file has been seen
	if got := servedSerial(t, w); got != newLeaf.Cert.SerialNumber.String() {
		t.Fatalf("after a broken file B serves %s, want %s", got, newLeaf.Cert.SerialNumber)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls during the rotation, %d failed", calls.Load(), failures.Load())
	if failures.Load() != 0 || calls.Load() == 0 {
		t.Fatalf("%d of %d calls failed during the rotation", failures.Load(), calls.Load())
	}
}

// servedSerial opens a new TLS connection to B's ingress and returns the
// serial of the certificate it presents.
func servedSerial(tb testing.TB, w *world) string {
	tb.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", w.b.IngressAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // only reads the serial
	if err != nil {
		return ""
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return new(big.Int).Set(certs[0].SerialNumber).String()
}
