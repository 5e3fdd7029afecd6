package ingress

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Lingering close of a refused peer's connection, as nginx's
// lingering_close: a peer refused for its certificate is answered, then
// its connection is closed (HTTP/2: GOAWAY, then the server closes it).
// When the peer is still sending its request body at that moment, closing
// a socket with unread data, or receiving data after close, makes the
// kernel answer with a TCP reset, and a reset discards what the peer had
// not read yet: the refusal itself, which then arrives without its body,
// or not at all. So such a connection is half-closed instead (our side
// done: TLS close_notify, TCP FIN), and what the peer still sends is read
// and dropped until it closes its side, stays silent for lingerIdle, or
// lingerTotal or lingerMaxBytes is reached.
const (
	lingerTotal    = 10 * time.Second
	lingerIdle     = 2 * time.Second
	lingerMaxBytes = 8 << 20
	// maxLingering bounds the connections lingering at once; more are
	// closed at once.
	maxLingering = 512
)

// lingerListener hands out connections that can be marked for a
// lingering close (markLinger).
type lingerListener struct {
	net.Listener
	in *Ingress
}

// Accept implements net.Listener.
func (l *lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c, in: l.in}, nil
}

// lingerConn is a connection of the ingress: closed at once, unless marked
// for a lingering close.
type lingerConn struct {
	net.Conn
	in     *Ingress
	linger atomic.Bool
	once   sync.Once
	err    error
}

// Close closes the connection, lingering when it was marked (see the
// constants above): it then returns at once and the rest happens in the
// background, ended by Shutdown at the latest.
func (c *lingerConn) Close() error {
	c.once.Do(func() {
		if c.linger.Load() && c.in.lingering(c.Conn) {
			return
		}
		c.err = c.Conn.Close()
	})
	return c.err
}

// markLinger marks the connection of the request context value c (the
// connection the server got, TLS over a lingerConn) for a lingering close.
func markLinger(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*lingerConn); ok {
		lc.linger.Store(true)
	}
}

// lingerBuf is the buffer of the reads that drain a lingering connection.
var lingerBuf = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// lingering starts the lingering close of raw and reports whether it did
// (false: too many connections linger already, or the ingress stopped;
// the caller closes raw).
func (in *Ingress) lingering(raw net.Conn) bool {
	cw, ok := raw.(interface{ CloseWrite() error })
	if !ok {
		return false
	}
	in.lingerMu.Lock()
	if in.lingerStopped || len(in.lingerConns) >= maxLingering {
		in.lingerMu.Unlock()
		return false
	}
	in.lingerConns[raw] = struct{}{}
	in.lingerWG.Add(1)
	in.lingerMu.Unlock()
	go func() {
		defer in.lingerWG.Done()
		defer func() {
			in.lingerMu.Lock()
			delete(in.lingerConns, raw)
			in.lingerMu.Unlock()
			_ = raw.Close()
		}()
		if err := cw.CloseWrite(); err != nil {
			return
		}
		drain(raw, time.Now().Add(lingerTotal))
	}()
	return true
}

// drain reads and drops what raw receives until the peer closes, stays
// silent for lingerIdle, or end or lingerMaxBytes is reached.
func drain(raw net.Conn, end time.Time) {
	bp := lingerBuf.Get().(*[]byte)
	defer lingerBuf.Put(bp)
	for total := 0; total < lingerMaxBytes; {
		deadline := time.Now().Add(lingerIdle)
		if end.Before(deadline) {
			deadline = end
		}
		if err := raw.SetReadDeadline(deadline); err != nil {
			return
		}
		n, err := raw.Read(*bp)
		total += n
		if err != nil {
			return // the peer closed (EOF), silence, reset, or Shutdown
		}
	}
}

// stopLingering ends every lingering close at once and waits for them
// (Shutdown).
func (in *Ingress) stopLingering() {
	in.lingerMu.Lock()
	in.lingerStopped = true
	for c := range in.lingerConns {
		_ = c.SetReadDeadline(time.Now())
	}
	in.lingerMu.Unlock()
	in.lingerWG.Wait()
}
