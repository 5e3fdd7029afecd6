package federator

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"sync"

	"golang.org/x/net/http2"
)

// connPool holds the federator's HTTP/2 connections to remote ingresses,
// at most max of them open (FED_MAX_REMOTE_CONNS) when they are idle:
// opening a connection beyond max closes the least recently used idle
// ones. A connection with requests in flight is never closed for it, so
// max is exceeded while that many are busy. With it, the memory of a
// federator that calls many remotes is bounded by max rather than by the
// number of remotes called within FED_IDLE_CONN_TIMEOUT (about 25 KiB of
// heap per connection). Connections idle for FED_IDLE_CONN_TIMEOUT close
// themselves as before (x/net/http2's idle timer), whatever the count.
//
// It is x/net/http2's ClientConnPool: the Transport asks it for a
// connection per request (and retries there), and tells it when one dies.
type connPool struct {
	t    *http2.Transport
	dial func(ctx context.Context, addr string) (net.Conn, error)
	max  int // 0: no limit

	mu     sync.Mutex
	byAddr map[string][]*http2.ClientConn
	lru    list.List // of *pooled, the most recently used first
	elems  map[*http2.ClientConn]*list.Element
	dials  map[string]*dialCall
}

// pooled is a connection of the pool.
type pooled struct {
	addr string
	cc   *http2.ClientConn
}

// dialCall is one connection being made to an address; the requests that
// need it meanwhile wait for it.
type dialCall struct {
	done chan struct{}
	err  error
}

func newConnPool(t *http2.Transport, max int, dial func(ctx context.Context, addr string) (net.Conn, error)) *connPool {
	return &connPool{t: t, dial: dial, max: max, byAddr: make(map[string][]*http2.ClientConn),
		elems: make(map[*http2.ClientConn]*list.Element), dials: make(map[string]*dialCall)}
}

// GetClientConn returns a connection to addr with a stream reserved for
// req, making one when none can take it (one dial per address at a time).
func (p *connPool) GetClientConn(req *http.Request, addr string) (*http2.ClientConn, error) {
	ctx := req.Context()
	for {
		p.mu.Lock()
		for _, cc := range p.byAddr[addr] {
			if cc.ReserveNewRequest() {
				p.lru.MoveToFront(p.elems[cc])
				p.mu.Unlock()
				return cc, nil
			}
		}
		if call := p.dials[addr]; call != nil {
			p.mu.Unlock()
			select {
			case <-call.done:
				continue // take the new connection, or dial again
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		call := &dialCall{done: make(chan struct{})}
		p.dials[addr] = call
		p.mu.Unlock()

		cc, err := p.connect(ctx, addr)
		p.mu.Lock()
		delete(p.dials, addr)
		call.err = err
		close(call.done)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		reserved := cc.ReserveNewRequest()
		p.byAddr[addr] = append(p.byAddr[addr], cc)
		p.elems[cc] = p.lru.PushFront(&pooled{addr: addr, cc: cc})
		evicted := p.evictLocked()
		p.mu.Unlock()
		for _, old := range evicted {
			_ = old.Close()
		}
		if reserved {
			return cc, nil
		}
	}
}

// connect dials addr and starts HTTP/2 on the connection.
func (p *connPool) connect(ctx context.Context, addr string) (*http2.ClientConn, error) {
	conn, err := p.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	cc, err := p.t.NewClientConn(conn)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return cc, nil
}

// evictLocked removes the least recently used idle connections beyond max
// from the pool and returns them, to be closed without the lock.
func (p *connPool) evictLocked() []*http2.ClientConn {
	if p.max <= 0 {
		return nil
	}
	var out []*http2.ClientConn
	for e := p.lru.Back(); e != nil && p.lru.Len() > p.max; {
		prev := e.Prev()
		pc := e.Value.(*pooled)
		if idle(pc.cc) {
			p.removeLocked(pc.cc)
			out = append(out, pc.cc)
		}
		e = prev
	}
	return out
}

// idle reports whether cc has no request in flight, reserved or waiting.
func idle(cc *http2.ClientConn) bool {
	st := cc.State()
	return st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0
}

// MarkDead removes a connection that closed (or cannot take requests any
// more) from the pool.
func (p *connPool) MarkDead(cc *http2.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(cc)
}

func (p *connPool) removeLocked(cc *http2.ClientConn) {
	e, ok := p.elems[cc]
	if !ok {
		return
	}
	addr := e.Value.(*pooled).addr
	p.lru.Remove(e)
	delete(p.elems, cc)
	conns := p.byAddr[addr]
	for i, c := range conns {
		if c == cc {
			conns = append(conns[:i:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		delete(p.byAddr, addr)
	} else {
		p.byAddr[addr] = conns
	}
}

// closeIdle closes the connections without requests in flight.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	var out []*http2.ClientConn
	for cc := range p.elems {
		if idle(cc) {
			p.removeLocked(cc)
			out = append(out, cc)
		}
	}
	p.mu.Unlock()
	for _, cc := range out {
		_ = cc.Close()
	}
}

// open returns the number of connections in the pool.
func (p *connPool) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}
