// Package iox holds small I/O helpers shared by the federator and the
// ingress.
package iox

import "io"

// maxPrealloc bounds the buffer allocated ahead of a body from its
// declared length; a larger body grows the buffer as io.ReadAll does.
const maxPrealloc = 256 << 10

// ReadAllSized is io.ReadAll with a first buffer sized from the declared
// length (Content-Length, <= 0 when unknown): a body of that length is
// read into one allocation instead of a doubling series of them. The
// extra byte lets the final read see io.EOF without growing the buffer.
func ReadAllSized(r io.Reader, declared int64) ([]byte, error) {
	if declared <= 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, min(declared, maxPrealloc)+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}
