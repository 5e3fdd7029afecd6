package bus_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
)

// objectCount returns how many readable objects the bucket holds.
func objectCount(tb testing.TB, js jetstream.JetStream, bucket string) int {
	tb.Helper()
	st, err := js.ObjectStore(context.Background(), bucket)
	if err != nil {
		tb.Fatal(err)
	}
	list, err := st.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	return len(list)
}

// TestReplyStream: a handler answers with a stream (Request.ReplyStream)
// and the reply names an object holding the bytes; a handler that fails
// after storing its stream gets an error reply and the object is deleted.
func TestReplyStream(t *testing.T) {
	nc := startJetStream(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	objs, js := newObjects(t, nc, bus.ObjectsConfig{Bucket: "component-answers"})
	srv, err := bus.Serve(context.Background(), nc, subjects, "cargohold", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		switch req.RPC {
		case "asset":
			return req.ReplyStream(ctx, "image/png", asset.New("k", 300<<10))
		case "asset-then-fail":
			if _, err := req.ReplyStream(ctx, "image/png", asset.New("k", 10)); err != nil {
				return nil, err
			}
			return nil, contract.Errorf(contract.LabelInvalidRequest, "changed my mind")
		case "twice":
			if _, err := req.ReplyObject("image/png", bus.ObjectRef{Bucket: "b", Name: "n", Size: 1}); err != nil {
				return nil, err
			}
			return req.ReplyObject("image/png", bus.ObjectRef{Bucket: "b", Name: "n", Size: 1})
		case "bad-ref":
			return req.ReplyObject("image/png", bus.ObjectRef{Bucket: "a.b", Name: "n", Size: 1})
		default:
			return req.ReplyObject("", bus.ObjectRef{Bucket: "elsewhere", Name: "kept", Size: 5})
		}
	}, discardLogger(), bus.WithObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	ctx := testCtx(t, 20*time.Second)

	for _, structured := range []bool{false, true} {
		reply, err := bus.ExchangeEvent(ctx, nc, inbound(t, subjects, "cargohold", "asset", "a.example.com", bus.Event{Structured: structured}))
		if err != nil {
			t.Fatal(err)
		}
		if reply.Object.Bucket != "component-answers" || reply.Object.Size != 300<<10 || reply.DataContentType != "image/png" || len(reply.Data) != 0 || reply.Structured != structured {
			t.Fatalf("reply = %+v", reply)
		}
		r, err := objs.Open(ctx, reply.Object)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		_ = r.Close()
		want, _ := io.ReadAll(asset.New("k", 300<<10))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("object: %d bytes, %v", len(got), err)
		}
	}

	before := objectCount(t, js, "component-answers")
	_, err = bus.ExchangeEvent(ctx, nc, inbound(t, subjects, "cargohold", "asset-then-fail", "a.example.com", bus.Event{}))
	if !errors.Is(err, contract.ErrInvalidRequest) {
		t.Fatalf("asset-then-fail = %v", err)
	}
	if n := objectCount(t, js, "component-answers"); n != before {
		t.Errorf("%d objects after a failed handler, %d before: its stream was not deleted", n, before)
	}

	for _, rpc := range []string{"twice", "bad-ref"} {
		_, err := bus.ExchangeEvent(ctx, nc, inbound(t, subjects, "cargohold", rpc, "a.example.com", bus.Event{}))
		if e := contract.AsError(err); err == nil || e.Label != contract.LabelServerError {
			t.Errorf("%s = %v, want server-error", rpc, err)
		}
	}
	reply, err := bus.ExchangeEvent(ctx, nc, inbound(t, subjects, "cargohold", "other", "a.example.com", bus.Event{}))
	if err != nil || reply.Object != (bus.ObjectRef{Bucket: "elsewhere", Name: "kept", Size: 5}) || reply.DataContentType != contract.ContentTypeOctetStream {
		t.Fatalf("ReplyObject: %+v, %v", reply, err)
	}
}

// TestCallStream: a caller reads answers of any size as a stream; an
// object answer is read from the object store and deleted on Close; Call
// reads it whole.
func TestCallStream(t *testing.T) {
	nc := startJetStream(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	objs, js := newObjects(t, nc, bus.ObjectsConfig{})
	const size = 5*bus.ChunkSize + 3
	want, _ := io.ReadAll(asset.New("asset", size))
	// A federator that answers "asset" with an object and "echo" inline.
	sub, err := nc.Subscribe(subjects.OutAll(), func(msg *nats.Msg) {
		ev, err := bus.Decode(msg)
		if err != nil {
			t.Error(err)
			return
		}
		reply := bus.Reply(ev, "/federator", ev.Data)
		if route, _ := subjects.ParseOut(msg.Subject); route.RPC == "asset" {
			ref, err := objs.Put(context.Background(), contract.ContentTypeOctetStream, asset.New("asset", size), -1)
			if err != nil {
				t.Error(err)
				return
			}
			reply = bus.ObjectReply(ev, "/federator", contract.ContentTypeOctetStream, ref)
		}
		if err := msg.RespondMsg(reply.Message(msg.Reply)); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for _, d := range []struct {
		name string
		doer bus.Doer
	}{{"conn", nc}, {"requester", newRequester(t, nc)}} {
		t.Run(d.name, func(t *testing.T) {
			client := bus.NewClient(d.doer, subjects, "/cargohold")
			ctx := testCtx(t, 20*time.Second)
			body, err := client.CallStream(ctx, "b.example.com", "cargohold", "asset", []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			if body.Object.IsZero() || body.Size != size || body.ContentType != contract.ContentTypeOctetStream {
				t.Fatalf("body = %+v", body)
			}
			var got bytes.Buffer
			if _, err := io.Copy(&got, body); err != nil || !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("read %d bytes, %v", got.Len(), err)
			}
			if err := body.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := objs.Open(ctx, body.Object); !errors.Is(err, bus.ErrObjectNotFound) {
				t.Errorf("object after Close: %v, want deleted", err)
			}

			inline, err := client.CallStream(ctx, "b.example.com", "cargohold", "echo", []byte(`{"a":1}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(inline)
			if !inline.Object.IsZero() || string(b) != `{"a":1}` || inline.ContentType != contract.ContentTypeJSON || inline.Close() != nil {
				t.Fatalf("inline body %+v %q", inline, b)
			}

			whole, err := client.Call(ctx, "b.example.com", "cargohold", "asset", []byte(`{}`))
			if err != nil || !bytes.Equal(whole, want) {
				t.Fatalf("Call: %d bytes, %v", len(whole), err)
			}
		})
	}
	if n := objectCount(t, js, contract.DefaultObjectBucket); n != 0 {
		t.Errorf("%d objects left after the callers closed their bodies", n)
	}
}
