package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// procWorld is backends A and B whose NATS servers, federators and
// ingresses are processes of their own: the production binaries, built
// without the race detector, whose memory can be measured.
type procWorld struct {
	ca   *testbed.CA
	a, b *fedtest.ProcBackend
}

// newProcWorld builds the binaries and starts A and B (A allows B, B
// allows A) with the extra environment env.
func newProcWorld(tb testing.TB, env map[string]string) *procWorld {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := fedtest.BuildBinaries(ctx, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	dns, dir := testbed.StartDNS(tb), tb.TempDir()
	var logs io.Writer
	if os.Getenv("FEDBUS_TEST_LOG") != "" {
		logs = os.Stderr
	}
	start := func(domain, infra, peer string) *fedtest.ProcBackend {
		be, err := fedtest.StartProcBackend(ctx, fedtest.BackendOptions{Domain: domain, InfraHost: infra, CA: ca, DNS: dns, Dir: dir,
			Strategy: "allow-list", AllowList: []string{peer}, RequestTimeout: time.Minute, Env: env}, bin, logs)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := be.Close(cctx); err != nil {
				tb.Errorf("close %s: %v", domain, err)
			}
		})
		return be
	}
	return &procWorld{ca: ca, a: start(domainA, infraA, domainB), b: start(domainB, infraB, domainA)}
}

// hwm returns the peak resident set (VmHWM) of p in KiB.
func hwm(tb testing.TB, p *fedtest.Proc) int64 {
	tb.Helper()
	kib, err := p.Status("VmHWM")
	if err != nil {
		tb.Fatal(err)
	}
	return kib
}

// TestAssetsThroughProcesses downloads assets from B's cargohold to A's
// through the production binaries (federator A, ingress B) and NATS
// servers with their default limits (a message carries at most 1 MiB) and
// JetStream on file storage:
//
//   - a 50 MiB asset arrives byte-identical (SHA-256), and the peak
//     resident set (VmHWM) of federator A and of ingress B grows by far
//     less than the asset;
//   - 20 transfers of 5 MiB at once all arrive intact, while JSON answers
//     (a 1 KiB echo, a profile) still travel inline in the NATS reply;
//   - a remote that reads slowly does not make ingress B hold the asset:
//     HTTP/2 flow control holds it back, and the ingress reads the object
//     store a few chunks ahead.
func TestAssetsThroughProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	w := newProcWorld(t, nil)
	serveOn(t, w.b.NATS, w.b.Subjects, "cargohold", cargohold)
	serveOn(t, w.b.NATS, w.b.Subjects, "brig", component)
	a := w.a.Client("/cargohold")
	// Warm up: connections, TLS, the buckets and JetStream consumers are
	// in the baseline.
	download(t, a, "3-2-warm-up", 1<<20)

	t.Run("50 MiB asset, memory of federator A and ingress B", func(t *testing.T) {
		const size = 50 << 20
		before := map[string]int64{"federator A": hwm(t, w.a.Federator), "ingress B": hwm(t, w.b.Ingress)}
		body := download(t, a, "3-2-fifty", size)
		if body.Object.IsZero() {
			t.Fatal("the asset travelled inline")
		}
		after := map[string]int64{"federator A": hwm(t, w.a.Federator), "ingress B": hwm(t, w.b.Ingress)}
		for name, b := range before {
			grew := after[name] - b
			t.Logf("%s: VmHWM %d KiB → %d KiB (+%d KiB) for a %d KiB asset", name, b, after[name], grew, size>>10)
			// Far less than the asset: a few chunks, buffers and the
			// garbage collector's headroom, not the body.
			if grew > size>>10/4 {
				t.Errorf("%s grew by %d KiB, more than a quarter of the %d KiB asset", name, grew, size>>10)
			}
		}
	})

	t.Run("a slow remote: ingress B holds a few chunks", func(t *testing.T) {
		const size = 32 << 20
		before := hwm(t, w.b.Ingress)
		h := slowDownload(t, w, "3-2-slow", size)
		if h.Size() != size || h.Sum() != asset.Digest("3-2-slow", size) {
			t.Fatalf("got %d bytes with another digest", h.Size())
		}
		after := hwm(t, w.b.Ingress)
		t.Logf("ingress B: VmHWM %d KiB → %d KiB (+%d KiB) for a %d KiB asset read slowly", before, after, after-before, size>>10)
		if after-before > size>>10/4 {
			t.Errorf("ingress B grew by %d KiB for a %d KiB asset read slowly", after-before, size>>10)
		}
	})
	t.Run("20 transfers of 5 MiB at once, JSON still inline", func(t *testing.T) {
		const n, size = 20, 5 << 20
		before := map[string]int64{"federator A": hwm(t, w.a.Federator), "ingress B": hwm(t, w.b.Ingress)}
		var wg sync.WaitGroup
		errs := make(chan error, n+2)
		for i := range n {
			wg.Go(func() {
				key := "3-2-concurrent-" + strconv.Itoa(i)
				if _, err := fetch(a, key, size); err != nil {
					errs <- err
				}
			})
		}
		wg.Go(func() {
			// A 1 KiB JSON answer (echo) and a profile, while the
			// transfers run: inline, in the NATS reply.
			kib := fmt.Sprintf(`"%01022d"`, 7) // a JSON string of 1024 bytes
			for _, c := range []struct{ rpc, body string }{{"echo", kib}, {"whoami", `{}`}} {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				b, err := w.a.Client("/brig").CallStream(ctx, domainB, "brig", c.rpc, []byte(c.body))
				if err != nil {
					cancel()
					errs <- fmt.Errorf("%s: %w", c.rpc, err)
					continue
				}
				got, err := io.ReadAll(b)
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %w", c.rpc, err)
				case !b.Object.IsZero() || b.ContentType != contract.ContentTypeJSON:
					errs <- fmt.Errorf("%s: the JSON answer travelled as object %s (%s)", c.rpc, b.Object, b.ContentType)
				case c.rpc == "echo" && (len(got) != 1024 || string(got) != c.body):
					errs <- fmt.Errorf("echo: %d bytes back", len(got))
				}
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for name, b := range before {
			p := w.a.Federator
			if name == "ingress B" {
				p = w.b.Ingress
			}
			t.Logf("%s: VmHWM %d KiB → %d KiB for %d transfers of %d KiB at once", name, b, hwm(t, p), n, size>>10)
		}
	})

}

// slowDownload asks ingress B for an asset directly, as A's federator
// would (A's certificate, HTTP/2), and reads the answer slowly: 64 KiB
// every 5 ms.
func slowDownload(tb testing.TB, w *procWorld, key string, size int64) *asset.Hasher {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(w.a.Files.Cert, w.a.Files.Key)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(w.ca.Cert)
	tr := &http2.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: infraB, MinVersion: tls.VersionTLS13}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+w.b.IngressAddr+contract.Path("cargohold", asset.RPC), bytes.NewReader(asset.Body(key, size)))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set(contract.HTTPOriginDomain, domainA)
	req.Header.Set(contract.HTTPContentType, contract.ContentTypeJSON)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(contract.HTTPContentType) != contract.ContentTypeOctetStream || resp.ContentLength != size {
		tb.Fatalf("answer %s, %s, %d bytes", resp.Status, resp.Header.Get(contract.HTTPContentType), resp.ContentLength)
	}
	h := asset.NewHasher()
	buf := make([]byte, 64<<10)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		_, _ = h.Write(buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return h
		}
		if err != nil {
			tb.Fatalf("read after %d bytes: %v", h.Size(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
