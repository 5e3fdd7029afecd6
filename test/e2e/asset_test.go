package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// cargohold is the stand-in cargohold: stream-asset answers with the
// generated asset, streamed through the object store.
func cargohold(ctx context.Context, req *bus.Request) ([]byte, error) {
	switch req.RPC {
	case asset.RPC:
		r, err := asset.ParseRequest(req.Body)
		if err != nil {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "%v", err)
		}
		return req.ReplyStream(ctx, contract.ContentTypeOctetStream, asset.New(r.Key, r.Size))
	default:
		return component(ctx, req)
	}
}

// fetch downloads the asset key of size bytes from B through client (a
// cargohold of A) and checks its bytes; it returns the closed body.
func fetch(client *bus.Client, key string, size int64) (*bus.Body, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	body, err := client.CallStream(ctx, domainB, "cargohold", asset.RPC, asset.Body(key, size))
	if err != nil {
		return nil, fmt.Errorf("download %s (%d bytes): %w", key, size, err)
	}
	defer body.Close()
	h := asset.NewHasher()
	if _, err := io.Copy(h, body); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if h.Size() != size || h.Sum() != asset.Digest(key, size) {
		return nil, fmt.Errorf("%s: got %d bytes with another digest, want %d", key, h.Size(), size)
	}
	if body.Size != size || body.ContentType != contract.ContentTypeOctetStream {
		return nil, fmt.Errorf("%s: body of %d bytes, %s", key, body.Size, body.ContentType)
	}
	return body, nil
}

// download is fetch that fails the test.
func download(tb testing.TB, client *bus.Client, key string, size int64) *bus.Body {
	tb.Helper()
	body, err := fetch(client, key, size)
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// TestAssetDownload: assets from B's cargohold arrive at A's byte for byte,
// through the object stores of both backends (an octet stream never
// travels inline, however small: contract section 8.1), in binary and in
// structured content mode.
func TestAssetDownload(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "cargohold", cargohold)
	for _, tc := range []struct {
		name string
		size int64
	}{
		{"empty", 0},
		{"1 KiB", 1 << 10},
		{"3 MiB", 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := download(t, w.a.Client("/cargohold"), "3-2-"+tc.name, tc.size)
			if b.Object.IsZero() || b.Object.Bucket != contract.DefaultObjectBucket {
				t.Fatalf("body %+v", b)
			}
		})
	}
	t.Run("structured request", func(t *testing.T) {
		subject, err := w.a.Subjects.Out("cargohold", asset.RPC, domainB)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req := bus.Event{ID: bus.NewID(), Source: "/cargohold", Type: contract.TypeRequest, Data: asset.Body("structured", 200<<10), Structured: true}
		reply, err := bus.ExchangeEvent(ctx, w.a.NATS, req.Message(subject))
		if err != nil {
			t.Fatal(err)
		}
		if !reply.Structured || reply.Object.Size != 200<<10 || reply.DataContentType != contract.ContentTypeOctetStream {
			t.Fatalf("reply = %+v", reply)
		}
		js, err := jetstream.New(w.a.NATS)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := bus.NewObjects(js, bus.ObjectsConfig{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := objs.Open(ctx, reply.Object)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		h := asset.NewHasher()
		if _, err := io.Copy(h, r); err != nil || h.Sum() != asset.Digest("structured", 200<<10) {
			t.Fatalf("object: %d bytes, %v", h.Size(), err)
		}
	})
}

// assetWorld is A and B as newWorld makes them, with extra environment for
// each (on top of the lifted rate limits), the stand-in cargohold on B, and
// B's services logging JSON to logsB.
type assetWorld struct {
	*world
	logsB *testbed.LogBuffer
}

func newAssetWorld(tb testing.TB, envA, envB map[string]string, extraAllowA ...string) *assetWorld {
	tb.Helper()
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	w := &assetWorld{world: &world{ca: ca, dns: testbed.StartDNS(tb), dir: tb.TempDir()}, logsB: &testbed.LogBuffer{}}
	env := func(extra map[string]string) map[string]string {
		m := map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0"}
		maps.Copy(m, extra)
		return m
	}
	w.a = startBackend(tb, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: append([]string{domainB}, extraAllowA...), Env: env(envA)})
	w.b = startBackend(tb, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainA}, Env: env(envB),
		Logger: slog.New(slog.NewJSONHandler(w.logsB, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	serve(tb, w.b, "cargohold", cargohold)
	return w
}

// stored returns how many messages (chunks and metadata) A's bucket holds.
func (w *assetWorld) stored(tb testing.TB) uint64 {
	tb.Helper()
	js, err := jetstream.New(w.a.NATS)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(context.Background(), "OBJ_"+contract.DefaultObjectBucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// fakeRemote is a remote backend that is not fedbus: an HTTPS server
// (HTTP/2) with the certificate of infraC, registered in DNS for domainC,
// that answers every request with h.
func fakeRemote(tb testing.TB, w *world, h func(w http.ResponseWriter, r *http.Request, conn net.Conn)) {
	tb.Helper()
	cert := leaf(tb, w.ca, infraC)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	type connKey struct{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			h(rw, r, r.Context().Value(connKey{}).(net.Conn))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*cert}},
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
	tb.Cleanup(func() { _ = srv.Close(); <-done })
	w.dns.SetSRV(domainC, 60, testbed.SRVRecord{Target: infraC, Port: uint16(ln.Addr().(*net.TCPAddr).Port), Priority: 10, Weight: 5})
	mustSetA(tb, w.dns, infraC, "127.0.0.1")
}

// writeAsset writes the asset key of n bytes to rw as an octet stream,
// flushing, and returns the bytes written before a write failed.
func writeAsset(rw http.ResponseWriter, key string, n int64) int64 {
	rw.Header().Set(contract.HTTPContentType, contract.ContentTypeOctetStream)
	written, _ := io.Copy(flushWriter{rw}, asset.New(key, n))
	return written
}

type flushWriter struct{ http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	if err == nil {
		err = http.NewResponseController(f.ResponseWriter).Flush()
	}
	return n, err
}

// TestAssetTransferFailsHalfWay: a remote's answer that breaks off half way
// (the remote closes its connection, or stops sending until the deadline)
// gives the component the contract error of the failure, and A's object
// store keeps nothing: no readable object, no chunk.
func TestAssetTransferFailsHalfWay(t *testing.T) {
	w := newAssetWorld(t, nil, nil, domainC)
	const size = 4 << 20
	fakeRemote(t, w.world, func(rw http.ResponseWriter, r *http.Request, conn net.Conn) {
		rw.Header().Set("Content-Length", strconv.Itoa(size))
		writeAsset(rw, "half", size/2)
		switch r.URL.Path {
		case "/federation/cargohold/close-half-way":
			_ = conn.Close()
		case "/federation/cargohold/hang-half-way":
			<-r.Context().Done()
		}
	})
	for _, tc := range []struct {
		rpc     string
		timeout time.Duration
		label   string
	}{
		{"close-half-way", 10 * time.Second, contract.LabelConnectionRefused},
		{"hang-half-way", 2 * time.Second, contract.LabelTimeout},
	} {
		t.Run(tc.rpc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			_, err := w.a.Client("/cargohold").CallStream(ctx, domainC, "cargohold", tc.rpc, []byte(`{}`))
			var fe *contract.Error
			if !errors.As(err, &fe) || fe.Label != tc.label {
				t.Fatalf("CallStream = %v, want %s", err, tc.label)
			}
			waitFor(t, 10*time.Second, "A's bucket to hold nothing", func() bool { return w.stored(t) == 0 })
		})
	}
}

// TestAssetOverMaxObjectBytes: A accepts streamed bodies of at most 1 MiB.
// A larger answer is payload-too-large, and the transfer stops early:
// at once when the answer's Content-Length says so (B's ingress stops
// sending when A resets the stream), after a little over the limit when it
// does not (the remote's writes fail); A's bucket keeps nothing.
func TestAssetOverMaxObjectBytes(t *testing.T) {
	const limit, size, endless = 1 << 20, 8 << 20, 64 << 20
	w := newAssetWorld(t, map[string]string{"FED_MAX_OBJECT_BYTES": strconv.Itoa(limit)}, nil, domainC)
	var remoteWrote atomic.Int64
	fakeRemote(t, w.world, func(rw http.ResponseWriter, _ *http.Request, _ net.Conn) {
		remoteWrote.Store(writeAsset(rw, "endless", endless)) // no Content-Length
	})
	call := func(target, rpc string, body []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := w.a.Client("/cargohold").CallStream(ctx, target, "cargohold", rpc, body)
		if !errors.Is(err, contract.ErrPayloadTooLarge) {
			t.Fatalf("CallStream = %v, want payload-too-large", err)
		}
		waitFor(t, 10*time.Second, "A's bucket to hold nothing", func() bool { return w.stored(t) == 0 })
	}
	t.Run("Content-Length over the limit", func(t *testing.T) {
		call(domainB, asset.RPC, asset.Body("big", size))
		var sent float64 = -1
		waitFor(t, 10*time.Second, "B's ingress to log the broken stream", func() bool {
			lines, _ := w.logsB.JSONLines()
			for _, l := range lines {
				if l["msg"] == "streaming an object to the remote broke off" {
					sent, _ = l["sent"].(float64)
					return true
				}
			}
			return false
		})
		t.Logf("B's ingress sent %.0f of %d bytes", sent, size)
		if sent >= size/2 {
			t.Errorf("B's ingress sent %v of %d bytes before A refused them", sent, size)
		}
	})
	t.Run("no Content-Length, the body grows over the limit", func(t *testing.T) {
		call(domainC, asset.RPC, []byte(`{}`))
		waitFor(t, 10*time.Second, "the remote's handler to end", func() bool { return remoteWrote.Load() > 0 })
		t.Logf("the remote wrote %d of %d bytes", remoteWrote.Load(), endless)
		if n := remoteWrote.Load(); n >= endless/4 {
			t.Errorf("the remote wrote %d of %d bytes before A stopped reading", n, endless)
		}
	})
}

// TestObjectsExpire: objects that nobody reads expire after
// FED_OBJECT_TTL.
func TestObjectsExpire(t *testing.T) {
	w := newAssetWorld(t, map[string]string{"FED_OBJECT_TTL": "1s"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body, err := w.a.Client("/cargohold").CallStream(ctx, domainB, "cargohold", asset.RPC, asset.Body("unread", 256<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	js, err := jetstream.New(w.a.NATS)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.ObjectStore(ctx, body.Object.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if status, err := st.Status(ctx); err != nil || status.TTL() != time.Second {
		t.Fatalf("bucket TTL %v, %v; want 1s (FED_OBJECT_TTL)", status, err)
	}
	waitFor(t, 15*time.Second, "the unread object to expire", func() bool {
		_, err := st.GetInfo(ctx, body.Object.Name)
		return errors.Is(err, jetstream.ErrObjectNotFound)
	})
	if w.stored(t) != 0 {
		t.Error("chunks of the expired object are left")
	}
}

// TestComponentObjectErrors: B's cargohold answers with objects B's
// ingress cannot send: one that does not exist (server-error), one over
// B's FED_MAX_OBJECT_BYTES (payload-too-large). A's caller sees B's error
// as federation-remote-error.
func TestComponentObjectErrors(t *testing.T) {
	w := newAssetWorld(t, nil, map[string]string{"FED_MAX_OBJECT_BYTES": strconv.Itoa(1 << 20)})
	serve(t, w.b, "galley", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		switch req.RPC {
		case "missing":
			return req.ReplyObject("", bus.ObjectRef{Bucket: contract.DefaultObjectBucket, Name: "no-such-object", Size: 10})
		default: // 2 MiB, through the component's own Objects (no limit of B's)
			return req.ReplyStream(ctx, contract.ContentTypeOctetStream, asset.New("big", 2<<20))
		}
	})
	for _, tc := range []labelCase{
		{name: "missing object", target: domainB, comp: "galley", rpc: "missing", label: contract.LabelRemoteError, inner: contract.LabelServerError},
		{name: "object over B's limit", target: domainB, comp: "galley", rpc: "big", label: contract.LabelRemoteError, inner: contract.LabelPayloadTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) { expectLabel(t, w.a, tc) })
	}
}

// TestLargeJSONGoesToTheStore: a JSON answer larger than one NATS message
// travels as an object too (application/json): with a Content-Length over
// the limit (B's component answers 2 MiB of JSON through the store), and
// without one (a remote that streams it), after the federator has read one
// message's worth.
func TestLargeJSONGoesToTheStore(t *testing.T) {
	w := newAssetWorld(t, nil, nil, domainC)
	big := []byte(`"` + strings.Repeat("j", 2<<20) + `"`)
	serve(t, w.b, "galley", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		return req.ReplyStream(ctx, contract.ContentTypeJSON, bytes.NewReader(big))
	})
	fakeRemote(t, w.world, func(rw http.ResponseWriter, _ *http.Request, _ net.Conn) {
		rw.Header().Set(contract.HTTPContentType, "application/json; charset=utf-8")
		_, _ = io.Copy(flushWriter{rw}, bytes.NewReader(big)) // no Content-Length
	})
	for _, target := range []string{domainB, domainC} {
		t.Run(target, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body, err := w.a.Client("/galley").CallStream(ctx, target, "galley", "big", []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, err := io.ReadAll(body)
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("read %d bytes, %v", len(got), err)
			}
			if body.Object.IsZero() || !strings.HasPrefix(body.ContentType, contract.ContentTypeJSON) {
				t.Fatalf("body %+v: want an object of JSON", body)
			}
		})
	}
}
