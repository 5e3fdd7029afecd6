package cork

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or 5 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pipe returns a corked client end and the raw server end of a loopback
// TCP connection, both closed when the test ends.
func pipe(tb testing.TB) (*Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		tb.Fatal("accept failed")
	}
	c := New(raw)
	tb.Cleanup(func() { _ = c.Close(); _ = srv.Close() })
	return c, srv
}

// TestWritesArriveWhole: concurrent writers' messages all arrive, each in
// one piece and in each writer's order, small ones (batched) and large ones
// (written directly when nothing is pending) mixed.
func TestWritesArriveWhole(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int // payload sizes, used in turn
	}{
		{"small", []int{0}},
		{"mixed", []int{0, direct + 100, 10, 3 * direct}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := pipe(t)
			const writers, each = 8, 200
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						n := tc.sizes[i%len(tc.sizes)]
						msg := fmt.Appendf(nil, "<%d:%04d:%06d>", w, i, n)
						msg = append(msg, bytes.Repeat([]byte{'x'}, n)...)
						if _, err := c.Write(msg); err != nil {
							t.Errorf("write: %v", err)
							return
						}
					}
				})
			}
			got := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(srv); got <- b }()
			wg.Wait()
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			rest := <-got
			next := make([]int, writers)
			for len(rest) > 0 {
				var w, i, n int
				if _, err := fmt.Sscanf(string(rest[:min(len(rest), 18)]), "<%d:%04d:%06d>", &w, &i, &n); err != nil {
					t.Fatalf("torn message at %q: %v", rest[:min(len(rest), 18)], err)
				}
				if w < 0 || w >= writers || i != next[w] {
					t.Fatalf("writer %d: message %d after %d", w, i, next[w]-1)
				}
				next[w]++
				head := len(fmt.Sprintf("<%d:%04d:%06d>", w, i, n))
				if len(rest) < head+n || !bytes.Equal(rest[head:head+n], bytes.Repeat([]byte{'x'}, n)) {
					t.Fatalf("writer %d message %d: payload torn", w, i)
				}
				rest = rest[head+n:]
			}
			for w, n := range next {
				if n != each {
					t.Errorf("writer %d: %d messages arrived, want %d", w, n, each)
				}
			}
		})
	}
}

// TestWriteErrorIsSticky: after the peer goes away, a write fails, and so
// does every later one.
func TestWriteErrorIsSticky(t *testing.T) {
	c, srv := pipe(t)
	_ = srv.(*net.TCPConn).SetLinger(0)
	_ = srv.Close() // the client's writes now get RST
	var err error
	waitFor(t, "a write error", func() bool {
		_, err = c.Write(make([]byte, 4096))
		return err != nil
	})
	if _, err2 := c.Write([]byte("x")); err2 == nil {
		t.Error("write after an error succeeded")
	}
}

// TestBackpressure: with a peer that does not read, Write blocks once
// MaxPending bytes wait, and resumes when the peer reads.
func TestBackpressure(t *testing.T) {
	client, server := net.Pipe() // synchronous: a write waits for a read
	c := New(client)
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := make([]byte, 4<<10) // below direct: buffered
		for range 3 * MaxPending / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}()
	waitFor(t, "the writer to block", func() bool {
		n := written.Load()
		time.Sleep(20 * time.Millisecond)
		return n == written.Load() && n > 0
	})
	// At most MaxPending bytes wait, beside the batch being written (itself
	// at most MaxPending plus one write).
	if n, limit := written.Load(), int64(2*MaxPending+4<<10); n > limit {
		t.Errorf("%d bytes accepted with no reader, limit %d", n, limit)
	}
	go func() { _, _ = io.Copy(io.Discard, server) }()
	<-done
	if n := written.Load(); n != 3*MaxPending {
		t.Errorf("wrote %d bytes, want %d", n, 3*MaxPending)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = server.Close()
}

// TestCloseEndsGoroutines: Close returns after the writing goroutine, and
// a write after Close fails with net.ErrClosed.
func TestCloseEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c, srv := pipe(t)
	go func() { _, _ = io.Copy(io.Discard, srv) }()
	for range 100 {
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
	_ = srv.Close()
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// stuckClose is a connection whose Close hangs (like a TLS close alert to
// a peer that reads nothing) until its network connection is closed.
type stuckClose struct {
	net.Conn // a net.Pipe end nobody reads
}

func (s stuckClose) Close() error {
	_, _ = s.Conn.Write([]byte("close alert")) // blocks: nobody reads
	return s.Conn.Close()
}

func (s stuckClose) NetConn() net.Conn { return s.Conn }

// TestCloseDoesNotHang: with a peer that reads nothing, Close still
// returns (it closes the network connection under a hanging TLS close).
func TestCloseDoesNotHang(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { _ = server.Close() })
	c := New(stuckClose{client})
	if _, err := c.Write([]byte("pending")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung with a peer that reads nothing")
	}
}
