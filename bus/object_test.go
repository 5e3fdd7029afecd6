package bus_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/test/testbed"
)

// startJetStream starts an in-process NATS server with JetStream on file
// storage (default limits: 1 MiB max payload) and returns a connection.
func startJetStream(tb testing.TB) *nats.Conn {
	tb.Helper()
	s, err := testbed.StartNATS(tb.TempDir())
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return connect(tb, s.ClientURL())
}

// newObjects returns the object store helper of a JetStream connection.
func newObjects(tb testing.TB, nc *nats.Conn, cfg bus.ObjectsConfig) (*bus.Objects, jetstream.JetStream) {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	objs, err := bus.NewObjects(js, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return objs, js
}

// storedMessages returns how many messages (chunks and metadata) the
// bucket's stream holds.
func storedMessages(tb testing.TB, js jetstream.JetStream, bucket string) uint64 {
	tb.Helper()
	st, err := js.Stream(context.Background(), "OBJ_"+bucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

func TestObjectsRoundTrip(t *testing.T) {
	nc := startJetStream(t)
	objs, js := newObjects(t, nc, bus.ObjectsConfig{})
	for _, tc := range []struct {
		name string
		size int64
	}{
		{"empty", 0},
		{"one byte", 1},
		{"a chunk less one", bus.ChunkSize - 1},
		{"a chunk", bus.ChunkSize},
		{"a chunk and one", bus.ChunkSize + 1},
		{"beyond the readahead", 11*bus.ChunkSize + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			ref, err := objs.Put(ctx, "application/octet-stream", asset.New(tc.name, tc.size), -1)
			if err != nil {
				t.Fatal(err)
			}
			if ref.Bucket != contract.DefaultObjectBucket || ref.Size != tc.size || !contract.ValidObjectName(ref.Name) {
				t.Fatalf("ref = %+v", ref)
			}
			want, _ := io.ReadAll(asset.New(tc.name, tc.size))
			for _, how := range []string{"Read", "WriteTo"} {
				r, err := objs.Open(ctx, ref)
				if err != nil {
					t.Fatal(err)
				}
				if r.ContentType() != "application/octet-stream" || r.Size() != tc.size {
					t.Errorf("reader of %s, %d bytes", r.ContentType(), r.Size())
				}
				var got bytes.Buffer
				if how == "Read" {
					_, err = io.CopyBuffer(&got, struct{ io.Reader }{r}, make([]byte, 1000))
				} else {
					_, err = r.WriteTo(&got)
				}
				if err != nil || !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("%s: %d bytes, %v; want %d bytes", how, got.Len(), err, len(want))
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := objs.Delete(ctx, ref); err != nil {
				t.Fatal(err)
			}
			if _, err := objs.Open(ctx, ref); !errors.Is(err, bus.ErrObjectNotFound) {
				t.Fatalf("Open after Delete = %v, want ErrObjectNotFound", err)
			}
		})
	}
	// Every reader removed its consumer.
	st, err := js.Stream(context.Background(), "OBJ_"+contract.DefaultObjectBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.State.Consumers != 0 {
		t.Fatalf("consumers left: %v, %v", info.State.Consumers, err)
	}
}

// failingReader gives n bytes, then fails with err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestObjectsPutFailures(t *testing.T) {
	nc := startJetStream(t)
	const limit = 1 << 20
	objs, js := newObjects(t, nc, bus.ObjectsConfig{Bucket: "put-failures", MaxBytes: limit})
	if err := objs.Ensure(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("connection reset by peer")
	for _, tc := range []struct {
		name     string
		body     *countingReader
		size     int64
		want     error // errors.Is
		maxRead  int64
		isSource bool
	}{
		{"declared size over the limit: nothing read", &countingReader{r: asset.New("a", 4*limit)}, 4 * limit, contract.ErrPayloadTooLarge, 0, false},
		{"body over the limit: stops one byte over", &countingReader{r: asset.New("b", 64*limit)}, -1, contract.ErrPayloadTooLarge, limit + 1, false},
		{"body breaks off half way", &countingReader{r: &failingReader{r: asset.New("c", 3*bus.ChunkSize/2), err: broken}}, -1, broken, 3 * bus.ChunkSize / 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := objs.Put(testCtx(t, 10*time.Second), "application/octet-stream", tc.body, tc.size)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Put = %v, want %v", err, tc.want)
			}
			var se *bus.SourceError
			if errors.As(err, &se) != tc.isSource {
				t.Errorf("Put = %T %v: SourceError %v, want %v", err, err, !tc.isSource, tc.isSource)
			}
			if tc.body.n > tc.maxRead {
				t.Errorf("read %d bytes of the body, at most %d expected", tc.body.n, tc.maxRead)
			}
			// No readable object and no chunk left.
			if n := storedMessages(t, js, "put-failures"); n != 0 {
				t.Errorf("the bucket holds %d messages after a failed Put", n)
			}
		})
	}
	t.Run("deadline while the body is read", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { _, _ = io.Copy(pw, asset.New("d", bus.ChunkSize+7)) }() // then nothing more
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		go func() { <-ctx.Done(); _ = pw.CloseWithError(ctx.Err()) }() // as an HTTP body does
		_, err := objs.Put(ctx, "", pr, -1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put = %v, want the deadline", err)
		}
		waitFor(t, 5*time.Second, "the chunks of the broken body to be removed", func() bool {
			return storedMessages(t, js, "put-failures") == 0
		})
	})
}

func TestObjectsOpenFailures(t *testing.T) {
	nc := startJetStream(t)
	objs, js := newObjects(t, nc, bus.ObjectsConfig{MaxBytes: 4 * bus.ChunkSize})
	ctx := testCtx(t, 20*time.Second)
	ref, err := objs.Put(ctx, "", asset.New("k", 3*bus.ChunkSize), -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := objs.Open(ctx, bus.ObjectRef{Bucket: ref.Bucket, Name: "nope", Size: 1}); !errors.Is(err, bus.ErrObjectNotFound) {
			t.Fatalf("Open = %v", err)
		}
		if _, err := objs.Open(ctx, bus.ObjectRef{Bucket: "no-bucket", Name: "x", Size: 1}); !errors.Is(err, bus.ErrObjectNotFound) {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("size differs from the reference", func(t *testing.T) {
		bad := ref
		bad.Size++
		if _, err := objs.Open(ctx, bad); !errors.Is(err, bus.ErrObjectCorrupt) {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("reference over MaxBytes", func(t *testing.T) {
		big := ref
		big.Size = 5 * bus.ChunkSize
		if _, err := objs.Open(ctx, big); !errors.Is(err, contract.ErrPayloadTooLarge) {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("digest differs: the last bytes are never handed out", func(t *testing.T) {
		// Rewrite the object's metadata with another digest.
		st, err := js.ObjectStore(ctx, ref.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.GetInfo(ctx, ref.Name)
		if err != nil {
			t.Fatal(err)
		}
		info.Digest = "SHA-256=" + "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="
		meta, _ := json.Marshal(info)
		m := nats.NewMsg("$O." + ref.Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(ref.Name)))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Data = meta
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		r, err := objs.Open(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if !errors.Is(err, bus.ErrObjectCorrupt) {
			t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
		}
		if int64(len(got)) >= ref.Size {
			t.Fatalf("%d bytes handed out before the digest failed", len(got))
		}
	})
}

func TestObjectsTransferSlots(t *testing.T) {
	nc := startJetStream(t)
	objs, _ := newObjects(t, nc, bus.ObjectsConfig{MaxTransfers: 1})
	ctx := testCtx(t, 20*time.Second)
	ref, err := objs.Put(ctx, "", asset.New("k", 10), -1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := objs.Open(ctx, ref) // holds the only slot until Close
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := objs.Put(short, "", asset.New("k", 10), -1); !errors.Is(err, contract.ErrTimeout) {
		t.Fatalf("Put while the slot is taken = %v, want federation-timeout", err)
	}
	done := make(chan error, 1)
	go func() {
		r2, err := objs.Open(ctx, ref) // waits for the slot
		if err == nil {
			err = r2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("second Open did not wait for the slot: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewObjectsRefusesBadConfig(t *testing.T) {
	nc := startJetStream(t)
	js, _ := jetstream.New(nc)
	for _, cfg := range []bus.ObjectsConfig{
		{Bucket: "a.b"},
		{TTL: time.Millisecond},
		{MaxBytes: -1},
		{MaxTransfers: -1},
	} {
		if _, err := bus.NewObjects(js, cfg); err == nil {
			t.Errorf("NewObjects(%+v) accepted", cfg)
		}
	}
	if _, err := bus.NewObjects(nil, bus.ObjectsConfig{}); err == nil {
		t.Error("NewObjects without JetStream accepted")
	}
}
