package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// cleanupTimeout bounds the deletion of an object that nobody will read.
const cleanupTimeout = 2 * time.Second

// lazyObjects is an Objects made on a connection at its first use, for a
// Client or a Server that was not given one.
type lazyObjects struct {
	once  sync.Once
	nc    *nats.Conn
	given *Objects
	objs  *Objects
	err   error
}

func (l *lazyObjects) get() (*Objects, error) {
	l.once.Do(func() {
		if l.given != nil {
			l.objs = l.given
			return
		}
		if l.nc == nil {
			l.err = errors.New("no NATS connection for the object store: give the client its Objects")
			return
		}
		js, err := jetstream.New(l.nc)
		if err != nil {
			l.err = fmt.Errorf("object store: %w", err)
			return
		}
		l.objs, l.err = NewObjects(js, ObjectsConfig{})
	})
	return l.objs, l.err
}

// connOf returns the NATS connection a Doer sends through, when it is one
// of fedbus's.
func connOf(d Doer) *nats.Conn {
	switch x := d.(type) {
	case *nats.Conn:
		return x
	case *Requester:
		return x.nc
	default:
		return nil
	}
}

// Body is the answer of a federated call read as a stream (CallStream):
// the body of the fedbus.response, whether it travelled inline or as an
// object of the object store. Read it before the call's context ends, then
// Close it.
type Body struct {
	// ContentType is the body's media type (ce-datacontenttype).
	ContentType string
	// Size is the body's length in bytes.
	Size int64
	// Object names the object that holds the body; zero when the body
	// travelled inline.
	Object ObjectRef

	inline *bytes.Reader
	obj    *ObjectReader
	objs   *Objects
	// ctx is the call's context, for Close's delete of the object: kept
	// because io.Closer's Close takes none.
	ctx context.Context
}

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	if b.obj != nil {
		return b.obj.Read(p)
	}
	return b.inline.Read(p)
}

// WriteTo implements io.WriterTo (io.Copy uses it): an object's chunks are
// written as they arrive.
func (b *Body) WriteTo(w io.Writer) (int64, error) {
	if b.obj != nil {
		return b.obj.WriteTo(w)
	}
	return b.inline.WriteTo(w)
}

// Close stops reading and deletes the object, which the federator made
// for this answer alone (an object left behind expires after
// FED_OBJECT_TTL anyway).
func (b *Body) Close() error {
	if b.obj == nil {
		return nil
	}
	err := b.obj.Close()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), cleanupTimeout)
	defer cancel()
	if derr := b.objs.Delete(ctx, b.Object); derr != nil && !errors.Is(derr, ErrObjectNotFound) {
		err = errors.Join(err, derr)
	}
	b.obj = nil
	return err
}

// CallStream is Call for answers of any size and media type, such as
// cargohold's stream-asset: it returns the answer as a stream, read from
// the object store chunk by chunk when the federator put it there
// (contract section 8), so that the caller never holds the whole body. ctx
// bounds the call and the reading of the body.
func (c *Client) CallStream(ctx context.Context, targetDomain, component, rpc string, body []byte, opts ...CallOption) (*Body, error) {
	ev, err := c.call(ctx, targetDomain, component, rpc, body, opts)
	if err != nil {
		return nil, err
	}
	if ev.Object.IsZero() {
		ct := ev.DataContentType
		if ct == "" {
			ct = contract.ContentTypeJSON
		}
		return &Body{ContentType: ct, Size: int64(len(ev.Data)), inline: bytes.NewReader(ev.Data)}, nil
	}
	return c.objectBody(ctx, ev)
}

// objectBody opens the object of a response.
func (c *Client) objectBody(ctx context.Context, ev Event) (*Body, error) {
	objs := c.Objects
	var err error
	if objs == nil {
		objs, err = c.objects.get()
	}
	if err != nil {
		return nil, contract.Errorf(contract.LabelServerError, "the answer is the object %s: %v", ev.Object, err)
	}
	r, err := objs.Open(ctx, ev.Object)
	if err != nil {
		return nil, objectError(err)
	}
	ct := ev.DataContentType
	if ct == "" {
		ct = contract.ContentTypeOctetStream
	}
	return &Body{ContentType: ct, Size: ev.Object.Size, Object: ev.Object, obj: r, objs: objs, ctx: ctx}, nil
}

// objectError is the contract error of a failure to read an object: its
// own contract error, federation-timeout at the deadline, else
// server-error.
func objectError(err error) *contract.Error {
	var ce *contract.Error
	if errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) {
		return contract.AsError(err)
	}
	return contract.Errorf(contract.LabelServerError, "%v", err)
}

// ServeOption configures Serve.
type ServeOption func(*Server)

// WithObjects makes the server's handlers store their streamed answers
// (Request.ReplyStream) with objs; by default they go to the contract's
// default bucket on the server's connection.
func WithObjects(objs *Objects) ServeOption {
	return func(s *Server) { s.objects.given = objs }
}

// streamed is a handler's answer through the object store.
type streamed struct {
	ref         ObjectRef
	contentType string
	owned       bool // made by ReplyStream: deleted when the handler fails after all
}

// ReplyStream answers the request with body, streamed into the object
// store chunk by chunk (contract section 8: the ingress then streams it to
// the remote): for answers that are large or not JSON, such as an asset.
// A handler returns its results: return req.ReplyStream(ctx, ct, f).
// The answer is not held in memory.
func (r *Request) ReplyStream(ctx context.Context, contentType string, body io.Reader) ([]byte, error) {
	if r.answer != nil {
		return nil, errors.New("reply stream: the request has an answer already")
	}
	objs, err := r.objects.get()
	if err != nil {
		return nil, fmt.Errorf("reply stream: %w", err)
	}
	ref, err := objs.Put(ctx, contentType, body, -1)
	if err != nil {
		return nil, fmt.Errorf("reply stream: %w", err)
	}
	r.answer = &streamed{ref: ref, contentType: contentType, owned: true}
	return nil, nil
}

// ReplyObject answers the request with an object that is in the object
// store already (its bucket must be readable by the ingress). The ingress
// streams it to the remote; it deletes only objects of its own
// FED_OBJECT_BUCKET once sent. A handler returns its results.
func (r *Request) ReplyObject(contentType string, ref ObjectRef) ([]byte, error) {
	if r.answer != nil {
		return nil, errors.New("reply object: the request has an answer already")
	}
	if _, err := parseObjectRef(ref.Bucket, ref.Name, fmt.Sprint(ref.Size)); err != nil {
		// The handler's mistake, not the caller's: server-error.
		return nil, fmt.Errorf("reply object: %v", err)
	}
	r.answer = &streamed{ref: ref, contentType: contentType}
	return nil, nil
}
