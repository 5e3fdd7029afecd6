package bench

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// delayProxy forwards TCP connections on loopback to a target and delays
// every byte by half the added round-trip time in each direction, as a
// long link would (bandwidth is not limited). TLS passes through it
// untouched. While closed, it refuses connections (accepts and closes
// them), as a remote that is down.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // one way
	open   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// chunk is data read at a time, to be written at due.
type chunk struct {
	data []byte
	due  time.Time
}

// startDelayProxy listens on 127.0.0.1 and forwards to target with rtt
// added to every round trip. It starts open.
func startDelayProxy(target string, rtt time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, delay: rtt / 2, conns: make(map[net.Conn]struct{})}
	p.open.Store(true)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// port is the proxy's port.
func (p *delayProxy) port() uint16 {
	addr, _ := p.ln.Addr().(*net.TCPAddr)
	return uint16(addr.Port)
}

// setOpen opens or closes the proxy; closing cuts the connections open.
func (p *delayProxy) setOpen(open bool) {
	p.open.Store(open)
	if !open {
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	}
}

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.open.Load() {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *delayProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

// serve forwards one connection both ways.
func (p *delayProxy) serve(down net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = down.Close()
		return
	}
	p.track(down, true)
	p.track(up, true)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(up, down) }()
	go func() { defer wg.Done(); p.pipe(down, up) }()
	wg.Wait()
	p.track(down, false)
	p.track(up, false)
}

// pipe copies from src to dst, each chunk delay after it was read.
func (p *delayProxy) pipe(dst, src net.Conn) {
	queue := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				for range queue { // drain: the reader ends on its own
				}
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			queue <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.delay)}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
	_ = dst.Close() // the other direction's read ends too
}

// close stops the proxy and every connection.
func (p *delayProxy) close() {
	_ = p.ln.Close()
	p.setOpen(false)
	p.wg.Wait()
}
