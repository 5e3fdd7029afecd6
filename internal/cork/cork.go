// Package cork batches the writes that several goroutines make to one
// connection in short succession into one write: a user-space TCP_CORK.
//
// x/net/http2's client flushes after every frame it writes: a request with
// a body costs two writes (HEADERS, then DATA), each one TLS record and one
// system call, and the server reads them one by one. Over a Conn, a Write
// only appends to a buffer; a short-lived goroutine lets the other
// goroutines that are ready to run append theirs (runtime.Gosched), then
// writes the whole buffer at once. Under light load it writes right away.
//
// A failed write is reported by the next Write and closes the underlying
// connection, so that its reader fails too. Write blocks while MaxPending
// bytes wait (beside the batch being written), so a stalled peer cannot
// grow the buffer without bound.
package cork

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"time"
)

// MaxPending is how many bytes may wait to be written before Write blocks.
const MaxPending = 1 << 20

// closeFlush bounds how long Close spends writing what is still pending
// (and the TLS close alert): x/net/http2 gives an unresponsive peer 250 ms
// before it forces a *tls.Conn closed, which it cannot do through a Conn.
const closeFlush = 250 * time.Millisecond

// keepBuf is the largest buffer returned to the pool (the pool is shared
// by every connection, and emptied by the garbage collector).
const keepBuf = MaxPending + 64<<10

// direct is the size from which a write to an idle connection is written
// at once, without a copy: a batch would gain nothing (a TLS record holds
// at most 16 KiB).
const direct = 16 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// Conn is a net.Conn whose writes are batched. Reads and deadlines go to
// the wrapped connection.
type Conn struct {
	net.Conn

	mu       sync.Mutex
	drained  sync.Cond // signalled when a batch was written or writing stops
	buf      *[]byte   // bytes waiting to be written, from bufs; nil when none
	flushing bool      // a goroutine is writing
	err      error     // sticky: the first write error, or net.ErrClosed
	done     sync.WaitGroup
}

// New wraps c.
func New(c net.Conn) *Conn {
	cc := &Conn{Conn: c}
	cc.drained.L = &cc.mu
	return cc
}

// Write queues p. It returns an error only when an earlier write failed or
// the connection is closed.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && c.buf != nil && len(*c.buf) >= MaxPending {
		c.drained.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(p) >= direct && !c.flushing {
		// Nothing is pending: write now (other writers wait on c.mu,
		// which keeps the order).
		n, err := c.Conn.Write(p)
		if err != nil {
			c.err = err
			_ = c.Conn.Close()
		}
		return n, err
	}
	if c.buf == nil {
		c.buf = bufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if !c.flushing {
		c.flushing = true
		c.done.Add(1)
		go c.flush()
	}
	return len(p), nil
}

// flush writes batches until none is waiting.
func (c *Conn) flush() {
	defer c.done.Done()
	// Let the goroutines that are ready to run add their writes first.
	runtime.Gosched()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.buf != nil && c.err == nil {
		b := c.buf
		c.buf = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*b)
		release(b)
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
			// Wake the reader: the peer will never see what was lost.
			_ = c.Conn.Close()
		}
		c.drained.Broadcast()
	}
	if c.buf != nil { // writing failed: drop the rest
		release(c.buf)
		c.buf = nil
	}
	c.flushing = false
	c.drained.Broadcast()
}

func release(b *[]byte) {
	if cap(*b) <= keepBuf {
		*b = (*b)[:0]
		bufs.Put(b)
	}
}

// Close writes what is pending (for at most closeFlush), then closes the
// wrapped connection.
func (c *Conn) Close() error {
	// A TLS connection's Close sends an alert with a deadline of its own:
	// close the network connection under it when closeFlush is over, as
	// x/net/http2 does for a *tls.Conn it holds directly.
	if nc, ok := c.Conn.(interface{ NetConn() net.Conn }); ok {
		t := time.AfterFunc(closeFlush, func() { _ = nc.NetConn().Close() })
		defer t.Stop()
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlush))
	c.mu.Lock()
	for c.flushing {
		c.drained.Wait()
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	c.done.Wait()
	return c.Conn.Close()
}

// ConnectionState is the TLS state of the wrapped connection (the zero
// value when it is not TLS); HTTP clients read it.
func (c *Conn) ConnectionState() tls.ConnectionState {
	if s, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return s.ConnectionState()
	}
	return tls.ConnectionState{}
}
