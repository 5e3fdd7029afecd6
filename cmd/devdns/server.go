package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// maxUDPSize caps the EDNS0 payload size devdns answers with over UDP.
const maxUDPSize = 1232

// Server serves a Zone over UDP and TCP on one address. The zone can be
// replaced while serving (SetZone).
type Server struct {
	zone atomic.Pointer[Zone]
	log  *slog.Logger
	udp  *dns.Server
	tcp  *dns.Server
	addr string
	wg   sync.WaitGroup
	errc chan error
	stop sync.Once
	err  error // of the first Shutdown
}

// NewServer returns a server for zone; Start starts it.
func NewServer(zone *Zone, log *slog.Logger) *Server {
	s := &Server{log: log, errc: make(chan error, 2)}
	s.zone.Store(zone)
	return s
}

// SetZone replaces the zone served.
func (s *Server) SetZone(z *Zone) { s.zone.Store(z) }

// Start listens on addr (host:port, UDP and TCP; port 0 picks a port free
// for both) and serves in the background.
func (s *Server) Start(addr string) error {
	pc, ln, err := listen(addr)
	if err != nil {
		return err
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	udpUp, tcpUp := make(chan struct{}), make(chan struct{})
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(udpUp) }}
	s.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { close(tcpUp) }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.errc <- srv.ActivateAndServe()
		}()
	}
	for _, up := range []chan struct{}{udpUp, tcpUp} {
		select {
		case <-up:
		case err := <-s.errc:
			_ = s.Shutdown(context.Background())
			return fmt.Errorf("devdns: serve: %w", err)
		}
	}
	return nil
}

// Addr returns the address served (after Start).
func (s *Server) Addr() string { return s.addr }

// Errors delivers the error of a server that stopped serving on its own.
func (s *Server) Errors() <-chan error { return s.errc }

// Shutdown stops both servers, bounded by ctx. Later calls return the
// result of the first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop.Do(func() { s.err = s.shutdown(ctx) })
	return s.err
}

func (s *Server) shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv == nil {
			continue
		}
		if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("devdns: shutdown: %w", err)
	}
	return nil
}

func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("devdns: listen address %q: %w", addr, err)
	}
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("devdns: listen udp %s: %w", addr, err)
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if port != "0" {
			return nil, nil, fmt.Errorf("devdns: listen tcp %s: %w", addr, err)
		}
	}
	return nil, nil, fmt.Errorf("devdns: no port free for both udp and tcp on %s", host)
}

// serve answers one query; UDP answers are truncated to the client's EDNS0
// size (512 bytes without EDNS0).
func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.zone.Load().Answer(req)
	size := dns.MaxMsgSize
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(dns.MinMsgSize, min(int(opt.UDPSize()), maxUDPSize))
		}
	}
	if req.IsEdns0() != nil {
		resp.SetEdns0(uint16(min(size, maxUDPSize)), false)
	}
	resp.Truncate(size)
	if len(req.Question) == 1 {
		q := req.Question[0]
		s.log.Debug("query", "name", q.Name, "type", dns.TypeToString[q.Qtype], "rcode", dns.RcodeToString[resp.Rcode], "answers", len(resp.Answer), "from", w.RemoteAddr().String())
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Warn("write answer", "err", err)
	}
}
