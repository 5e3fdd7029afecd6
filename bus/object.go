package bus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// ObjectRef names the object of the JetStream object store that holds a
// body (contract section 8): Fedbus-Object-Bucket, Fedbus-Object-Name and
// Fedbus-Object-Size.
type ObjectRef struct {
	Bucket string
	Name   string
	Size   int64 // bytes
}

// IsZero reports whether r names no object (the body is inline).
func (r ObjectRef) IsZero() bool { return r.Bucket == "" && r.Name == "" && r.Size == 0 }

// String returns bucket/name, for logs.
func (r ObjectRef) String() string { return r.Bucket + "/" + r.Name }

// parseObjectRef checks the three parts of a reference: all present, a
// valid bucket and object name, a size that is a decimal number of bytes.
// A bad reference is invalid-request.
func parseObjectRef(bucket, name, size string) (ObjectRef, error) {
	if bucket == "" || name == "" || size == "" {
		return ObjectRef{}, contract.Errorf(contract.LabelInvalidRequest, "an object reference needs %s, %s and %s", contract.HeaderObjectBucket, contract.HeaderObjectName, contract.HeaderObjectSize)
	}
	if !contract.ValidBucket(bucket) {
		return ObjectRef{}, contract.Errorf(contract.LabelInvalidRequest, "%s %q is not [A-Za-z0-9_-]+", contract.HeaderObjectBucket, contract.Truncate(bucket, 64))
	}
	if !contract.ValidObjectName(name) {
		return ObjectRef{}, contract.Errorf(contract.LabelInvalidRequest, "%s %q is not 1 to 255 printable ASCII characters", contract.HeaderObjectName, contract.Truncate(name, 64))
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || size[0] == '+' {
		return ObjectRef{}, contract.Errorf(contract.LabelInvalidRequest, "%s %q is not a number of bytes", contract.HeaderObjectSize, contract.Truncate(size, 32))
	}
	return ObjectRef{Bucket: bucket, Name: name, Size: n}, nil
}

// The object store's layout (NATS ADR-20): the bucket's stream and the
// subject of an object's chunks.
const (
	objectStreamPrefix = "OBJ_"
	objectChunksFormat = "$O.%s.C.%s" // bucket, object NUID
)

const (
	// ChunkSize is the size of the chunks Put stores (the last one may be
	// shorter), or half the NATS server's max payload when that is
	// smaller: what a transfer into the store holds of a body. Larger
	// chunks cost the server and the client less per byte (fewer
	// messages and acknowledgements).
	ChunkSize = 256 << 10
	// readAheadBytes is about how much of an object a reader asks the
	// server for at once (in whole chunks, at least two; it asks again
	// when half are read): bounded memory whatever the reader's pace.
	readAheadBytes = 1 << 20
	// defaultChunk is the object store's chunk size when an object's
	// metadata does not say (nats.go's default).
	defaultChunk = 128 << 10
	// storeGrace is how long after the caller's deadline Put may still
	// talk to the store, to remove the chunks of a failed transfer.
	storeGrace = 2 * time.Second
	// closeTimeout bounds the clean-up requests of a reader's Close.
	closeTimeout = 2 * time.Second
	// consumerIdle is when the server removes a reader's consumer that
	// Close could not delete.
	consumerIdle = time.Minute
	// maxStores bounds the buckets whose handles are kept.
	maxStores = 16
)

var (
	// ErrObjectNotFound: the object of a reference does not exist (it
	// expired, or was deleted).
	ErrObjectNotFound = errors.New("bus: object not found")
	// ErrObjectCorrupt: the object's size or SHA-256 digest is not the one
	// its reference or metadata promises.
	ErrObjectCorrupt = errors.New("bus: object corrupt")
)

// SourceError is a failure of the reader Put was streaming from (the
// remote's body, the component's file), as opposed to a failure of the
// object store.
type SourceError struct{ Err error }

func (e *SourceError) Error() string { return "reading the body failed: " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// ObjectsConfig configures Objects. Zero fields take the contract's
// defaults (section 5).
type ObjectsConfig struct {
	// Bucket is where Put stores objects (FED_OBJECT_BUCKET).
	Bucket string
	// TTL is the age at which objects expire, set when Put creates the
	// bucket (FED_OBJECT_TTL); an existing bucket keeps its own.
	TTL time.Duration
	// MaxBytes bounds one object, stored or read (FED_MAX_OBJECT_BYTES).
	MaxBytes int64
	// MaxTransfers bounds the Puts and open readers at once
	// (FED_MAX_OBJECT_TRANSFERS); more wait for a slot until their
	// context ends. Zero: no bound.
	MaxTransfers int
	// Replicas of the bucket when Put creates it (FED_JETSTREAM_REPLICAS:
	// 3 on a NATS cluster); zero means one.
	Replicas int
}

// Objects moves bodies into and out of the JetStream object store in
// chunks, holding a few chunks at a time whatever the size of the body.
// Safe for concurrent use.
type Objects struct {
	js    jetstream.JetStream
	cfg   ObjectsConfig
	slots chan struct{} // nil: no bound

	mu     sync.Mutex
	stores map[string]jetstream.ObjectStore // opened buckets
}

// NewObjects returns the object store helper of js. It makes no request:
// the bucket is opened (and created) by the first Put.
func NewObjects(js jetstream.JetStream, cfg ObjectsConfig) (*Objects, error) {
	if js == nil {
		return nil, errors.New("new objects: no JetStream")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = contract.DefaultObjectBucket
	}
	if cfg.TTL == 0 {
		cfg.TTL = contract.DefaultObjectTTL
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = contract.DefaultMaxObjectBytes
	}
	switch {
	case !contract.ValidBucket(cfg.Bucket):
		return nil, fmt.Errorf("new objects: bucket %q is not [A-Za-z0-9_-]+", cfg.Bucket)
	case cfg.TTL < contract.MinObjectTTL:
		return nil, fmt.Errorf("new objects: TTL %v is shorter than %v", cfg.TTL, contract.MinObjectTTL)
	case cfg.MaxBytes < 0 || cfg.MaxTransfers < 0:
		return nil, errors.New("new objects: negative MaxBytes or MaxTransfers")
	}
	o := &Objects{js: js, cfg: cfg, stores: make(map[string]jetstream.ObjectStore)}
	if cfg.MaxTransfers > 0 {
		o.slots = make(chan struct{}, cfg.MaxTransfers)
	}
	return o, nil
}

// Bucket returns the bucket Put stores into.
func (o *Objects) Bucket() string { return o.cfg.Bucket }

// MaxBytes returns the largest object Put stores and Open reads.
func (o *Objects) MaxBytes() int64 { return o.cfg.MaxBytes }

// acquire waits for a transfer slot; the function it returns gives it
// back. It fails with federation-timeout when ctx ends first.
func (o *Objects) acquire(ctx context.Context) (func(), error) {
	if o.slots == nil {
		return func() {}, nil
	}
	select {
	case o.slots <- struct{}{}:
		return func() { <-o.slots }, nil
	default:
	}
	select {
	case o.slots <- struct{}{}:
		return func() { <-o.slots }, nil
	case <-ctx.Done():
		return nil, contract.Errorf(contract.LabelTimeout, "all %d object transfers of this process stayed busy until the deadline", cap(o.slots))
	}
}

// Ensure opens the bucket Put stores into, creating it when missing (Put
// does so as well: Ensure reports a problem before the first transfer).
func (o *Objects) Ensure(ctx context.Context) error {
	if _, err := o.store(ctx, o.cfg.Bucket, true); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// store returns the handle of bucket; create makes the bucket (with the
// configured TTL, on file storage) when it does not exist.
func (o *Objects) store(ctx context.Context, bucket string, create bool) (jetstream.ObjectStore, error) {
	o.mu.Lock()
	st := o.stores[bucket]
	o.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := o.js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		st, err = o.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      bucket,
			Description: "fedbus: large and streamed bodies of federated calls (contract section 8)",
			TTL:         o.cfg.TTL,
			Storage:     jetstream.FileStorage,
			Replicas:    max(o.cfg.Replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // made by another process meanwhile
			st, err = o.js.ObjectStore(ctx, bucket)
		}
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", bucket, ErrObjectNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	o.mu.Lock()
	if len(o.stores) < maxStores || bucket == o.cfg.Bucket {
		o.stores[bucket] = st
	}
	o.mu.Unlock()
	return st, nil
}

// Put streams r into a new object of the bucket (created when missing)
// and returns its reference. The body is read chunk by chunk as it
// arrives and stored while it is read; contentType is kept in the
// object's metadata. size is the body's length when known (-1 when not):
// a known size over MaxBytes fails at once, and reading stops as soon as
// the body grows over it (payload-too-large). A failure leaves no readable
// object; a failure of r is returned as a *SourceError. ctx bounds the
// transfer; r itself must end when ctx does (an HTTP body does).
func (o *Objects) Put(ctx context.Context, contentType string, r io.Reader, size int64) (ObjectRef, error) {
	if size > o.cfg.MaxBytes {
		return ObjectRef{}, objectTooLarge(size, o.cfg.MaxBytes)
	}
	release, err := o.acquire(ctx)
	if err != nil {
		return ObjectRef{}, err
	}
	defer release()
	// The store is told of the transfer's end on a context of its own,
	// so that it can still remove the chunks of a body that broke off
	// at the deadline.
	sctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(sctx, dl.Add(storeGrace))
		defer cancel()
	}
	st, err := o.store(sctx, o.cfg.Bucket, true)
	if err != nil {
		return ObjectRef{}, fmt.Errorf("put object: %w", err)
	}
	src := &source{ctx: ctx, r: r, limit: o.cfg.MaxBytes}
	meta := jetstream.ObjectMeta{
		Name: NewID(),
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: o.chunkSize()},
	}
	if contentType != "" {
		meta.Headers = nats.Header{"Content-Type": []string{contentType}}
	}
	info, err := st.Put(sctx, meta, src)
	switch {
	case src.tooLarge:
		return ObjectRef{}, objectTooLarge(-1, o.cfg.MaxBytes)
	case src.err != nil:
		return ObjectRef{}, &SourceError{Err: src.err}
	case err != nil:
		return ObjectRef{}, fmt.Errorf("put object %s/%s: %w", o.cfg.Bucket, meta.Name, err)
	}
	return ObjectRef{Bucket: o.cfg.Bucket, Name: meta.Name, Size: int64(info.Size)}, nil
}

// chunkSize returns the chunk size of Put: ChunkSize, or half the
// server's max payload when that is smaller.
func (o *Objects) chunkSize() uint32 {
	size := int64(ChunkSize)
	if mp := o.js.Conn().MaxPayload(); mp > 0 {
		size = min(size, mp/2)
	}
	return uint32(max(size, 1))
}

// objectTooLarge is the payload-too-large of a body over the limit of a
// streamed body (FED_MAX_OBJECT_BYTES); size is its announced size, -1
// when it was found while reading.
func objectTooLarge(size, limit int64) *contract.Error {
	if size >= 0 {
		return contract.Errorf(contract.LabelPayloadTooLarge, "a body of %d bytes is over the limit of %d bytes for a streamed body", size, limit)
	}
	return contract.Errorf(contract.LabelPayloadTooLarge, "the body grew over the limit of %d bytes for a streamed body", limit)
}

// source is the reader Put stores from: it fills each chunk whole (an
// HTTP body gives a frame at a time), stops once more than limit bytes
// came, and keeps its first failure so that Put can tell it from the
// store's.
type source struct {
	// ctx is the transfer's context: kept in the struct because Read,
	// which io.Reader fixes, takes none (as net/http.Request keeps its own).
	ctx      context.Context
	r        io.Reader
	limit    int64
	n        int64
	eof      bool
	err      error
	tooLarge bool
}

var errTooLarge = errors.New("body over the limit")

func (s *source) Read(p []byte) (int, error) {
	if s.err == nil && !s.eof {
		if err := s.ctx.Err(); err != nil {
			s.err = err
		}
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.eof {
		return 0, io.EOF
	}
	// Read no more than one byte over the limit.
	if room := s.limit - s.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n := 0
	for n < len(p) {
		m, err := s.r.Read(p[n:])
		n += m
		if err == io.EOF {
			s.eof = true
			break
		}
		if err != nil {
			s.err = err
			break
		}
	}
	s.n += int64(n)
	if s.n > s.limit {
		s.tooLarge, s.err = true, errTooLarge
		return 0, s.err
	}
	if n > 0 {
		return n, nil // a failure is reported by the next call
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

// Open returns a reader of the object ref names, after checking that it
// exists, has the size of the reference and is at most MaxBytes
// (payload-too-large). The reader holds a transfer slot until Close; it
// reads within ctx. It fails with an error wrapping ErrObjectNotFound when
// the object does not exist.
func (o *Objects) Open(ctx context.Context, ref ObjectRef) (*ObjectReader, error) {
	if ref.Size > o.cfg.MaxBytes {
		return nil, objectTooLarge(ref.Size, o.cfg.MaxBytes)
	}
	release, err := o.acquire(ctx)
	if err != nil {
		return nil, err
	}
	r, err := o.open(ctx, ref)
	if err != nil {
		release()
		return nil, err
	}
	r.release = release
	return r, nil
}

func (o *Objects) open(ctx context.Context, ref ObjectRef) (*ObjectReader, error) {
	st, err := o.store(ctx, ref.Bucket, false)
	if err != nil {
		return nil, fmt.Errorf("open object %s: %w", ref, err)
	}
	info, err := st.GetInfo(ctx, ref.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("open object %s: %w", ref, ErrObjectNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open object %s: %w", ref, err)
	}
	if int64(info.Size) != ref.Size {
		return nil, fmt.Errorf("open object %s: %d bytes stored, %d in the reference: %w", ref, info.Size, ref.Size, ErrObjectCorrupt)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, fmt.Errorf("open object %s: a link, not an object: %w", ref, ErrObjectNotFound)
	}
	digest, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, fmt.Errorf("open object %s: digest %q: %w", ref, info.Digest, ErrObjectCorrupt)
	}
	r := &ObjectReader{ctx: ctx, ref: ref, js: o.js, digest: digest, hash: sha256.New()}
	if info.Headers != nil {
		r.contentType = info.Headers.Get("Content-Type")
	}
	if ref.Size == 0 {
		return r, nil
	}
	// A consumer of the object's chunks that the reader pulls a few at a
	// time, about readAheadBytes (jetstream.ObjectStore.Get pushes them,
	// and its window grows to 32 MiB when the reader is slow).
	r.stream = objectStreamPrefix + ref.Bucket
	name := NewID()
	cons, err := o.js.CreateConsumer(ctx, r.stream, jetstream.ConsumerConfig{
		Name:              name,
		FilterSubject:     fmt.Sprintf(objectChunksFormat, ref.Bucket, info.NUID),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: consumerIdle,
	})
	if err != nil {
		return nil, fmt.Errorf("open object %s: consumer: %w", ref, err)
	}
	r.consumer = name
	chunk := int64(defaultChunk)
	if info.Opts != nil && info.Opts.ChunkSize > 0 {
		chunk = int64(info.Opts.ChunkSize)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(int(min(max(readAheadBytes/chunk, 2), 16))))
	if err != nil {
		r.deleteConsumer()
		return nil, fmt.Errorf("open object %s: %w", ref, err)
	}
	r.it = it
	return r, nil
}

// Delete removes the object ref names (its chunks at once).
func (o *Objects) Delete(ctx context.Context, ref ObjectRef) error {
	st, err := o.store(ctx, ref.Bucket, false)
	if err == nil {
		err = st.Delete(ctx, ref.Name)
	}
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		err = ErrObjectNotFound
	}
	if err != nil {
		return fmt.Errorf("delete object %s: %w", ref, err)
	}
	return nil
}

// ObjectReader reads an object chunk by chunk: it holds about
// readAheadBytes of it and checks the size and SHA-256 digest before it hands
// out the last bytes (a corrupt object ends with an error, never with
// io.EOF). Close it.
type ObjectReader struct {
	// ctx bounds the reads of the chunks: kept in the struct because
	// Read, which io.Reader fixes, takes none (as net/http.Request does).
	ctx         context.Context
	ref         ObjectRef
	contentType string
	js          jetstream.JetStream
	stream      string
	consumer    string
	it          jetstream.MessagesContext // nil for an empty object
	digest      []byte
	hash        hash.Hash
	got         int64  // bytes received
	cur         []byte // received, not yet read
	err         error
	release     func()
	closed      bool
}

// Ref returns the reference of the object.
func (r *ObjectReader) Ref() ObjectRef { return r.ref }

// Size returns the object's size in bytes.
func (r *ObjectReader) Size() int64 { return r.ref.Size }

// ContentType returns the content type kept with the object ("" when
// none).
func (r *ObjectReader) ContentType() string { return r.contentType }

// next receives the next chunk into r.cur; io.EOF once every byte was
// received and checked.
func (r *ObjectReader) next() error {
	if r.err != nil {
		return r.err
	}
	if r.got == r.ref.Size {
		if r.hash != nil {
			if !bytes.Equal(r.hash.Sum(nil), r.digest) {
				r.err = fmt.Errorf("read object %s: SHA-256 digest differs: %w", r.ref, ErrObjectCorrupt)
				return r.err
			}
			r.hash = nil
		}
		return io.EOF
	}
	msg, err := r.it.Next(jetstream.NextContext(r.ctx))
	if err != nil {
		if cerr := r.ctx.Err(); cerr != nil {
			err = cerr
		}
		r.err = fmt.Errorf("read object %s after %d bytes: %w", r.ref, r.got, err)
		return r.err
	}
	data := msg.Data()
	r.got += int64(len(data))
	if r.got > r.ref.Size || len(data) == 0 {
		r.err = fmt.Errorf("read object %s: more than %d bytes: %w", r.ref, r.ref.Size, ErrObjectCorrupt)
		return r.err
	}
	r.hash.Write(data)
	if r.got == r.ref.Size && !bytes.Equal(r.hash.Sum(nil), r.digest) {
		// Checked before the last bytes are handed out.
		r.err = fmt.Errorf("read object %s: SHA-256 digest differs: %w", r.ref, ErrObjectCorrupt)
		return r.err
	}
	if r.got == r.ref.Size {
		r.hash = nil
	}
	r.cur = data
	return nil
}

// Read implements io.Reader.
func (r *ObjectReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// WriteTo implements io.WriterTo: each chunk is written as received,
// without a copy.
func (r *ObjectReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		for len(r.cur) == 0 {
			if err := r.next(); err == io.EOF {
				return total, nil
			} else if err != nil {
				return total, err
			}
		}
		n, err := w.Write(r.cur)
		total += int64(n)
		r.cur = r.cur[n:]
		if err != nil {
			return total, err
		}
	}
}

// Close stops reading, removes the reader's consumer and gives back its
// transfer slot. It does not delete the object.
func (r *ObjectReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.it != nil {
		r.it.Stop()
	}
	r.deleteConsumer()
	if r.release != nil {
		r.release()
	}
	return nil
}

// deleteConsumer removes the consumer at once (the server would after
// consumerIdle).
func (r *ObjectReader) deleteConsumer() {
	if r.consumer == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), closeTimeout)
	defer cancel()
	_ = r.js.DeleteConsumer(ctx, r.stream, r.consumer)
	r.consumer = ""
}
