package e2e

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
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

func TestAssetDownload(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "cargohold", cargohold)
	b := download(t, w.a.Client("/cargohold"), "3-2-small", 5<<20)
	if b.Object.IsZero() || b.ContentType != contract.ContentTypeOctetStream {
		t.Fatalf("body %+v", b)
	}
}
