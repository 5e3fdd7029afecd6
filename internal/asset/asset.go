// Package asset makes the generated assets of the stand-in cargohold, the
// demo, the tests and the benchmark: a deterministic byte stream of any
// size for a key (ChaCha8 seeded with the key's SHA-256), produced as it
// is read, so that both ends of a transfer know the bytes and their digest
// without storing them.
package asset

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
)

// MaxSize bounds the size of a requested asset (1 GiB).
const MaxSize = 1 << 30

// RPC is the name of the cargohold RPC that serves assets.
const RPC = "stream-asset"

// Request is the body of a stream-asset request to the stand-in: the
// asset's key and the size to generate.
type Request struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

// ErrBadRequest is the error of a request ParseRequest refuses.
var ErrBadRequest = errors.New("asset: bad request")

// ParseRequest reads a stream-asset request body.
func ParseRequest(body []byte) (Request, error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return Request{}, fmt.Errorf("%w: body is not {\"key\": string, \"size\": bytes}: %v", ErrBadRequest, err)
	}
	if r.Key == "" || r.Size < 0 || r.Size > MaxSize {
		return Request{}, fmt.Errorf("%w: need a key and a size from 0 to %d bytes", ErrBadRequest, int64(MaxSize))
	}
	return r, nil
}

// Body returns the request body asking for the asset key of size bytes.
func Body(key string, size int64) []byte {
	b, _ := json.Marshal(Request{Key: key, Size: size}) // cannot fail: a string and an integer
	return b
}

// New returns the asset of key, size bytes long.
func New(key string, size int64) io.Reader {
	return &reader{src: rand.NewChaCha8(sha256.Sum256([]byte(key))), left: size}
}

type reader struct {
	src  *rand.ChaCha8
	left int64
}

func (r *reader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, _ := r.src.Read(p) // never fails
	r.left -= int64(n)
	return n, nil
}

// Digest returns the SHA-256 of the asset of key, size bytes long.
func Digest(key string, size int64) [sha256.Size]byte {
	h := sha256.New()
	_, _ = io.Copy(h, New(key, size)) // neither side fails
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// Hasher counts and hashes what is written to it: the receiving end of a
// transfer.
type Hasher struct {
	h hash.Hash
	n int64
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: sha256.New()} }

// Write implements io.Writer.
func (h *Hasher) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	return h.h.Write(p)
}

// Size returns the bytes written.
func (h *Hasher) Size() int64 { return h.n }

// Sum returns the SHA-256 of the bytes written.
func (h *Hasher) Sum() [sha256.Size]byte {
	var d [sha256.Size]byte
	h.h.Sum(d[:0])
	return d
}
