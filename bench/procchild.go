package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

// loadResult is what the load client reports after a window.
type loadResult struct {
	Lat      []time.Duration `json:"lat"`
	Errors   int             `json:"errors"`
	FirstErr string          `json:"first_error,omitempty"`
	Elapsed  time.Duration   `json:"elapsed"`
}

// ProcChild runs one child process of the separate-process mode; arg is
// its JSON childArgs. It writes READY once it serves, then, for the load
// client, runs a window per "window <warmup ms> <window ms> <in flight>
// <body bytes>" line of stdin, writing T0 when the window starts, T1 when
// it ends and RESULT <json>. It returns when ctx ends (or stdin closes).
func ProcChild(ctx context.Context, arg string, stdin io.Reader, stdout io.Writer) error {
	var a childArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return fmt.Errorf("child arguments: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch a.Mode {
	case "echo":
		nc, err := bus.Connect(a.NATS, "bench echo", log)
		if err != nil {
			return err
		}
		defer nc.Close()
		subjects, err := contract.NewSubjects(contract.DefaultPrefix)
		if err != nil {
			return err
		}
		srv, err := bus.Serve(ctx, nc, subjects, echoComponent, echoHandler, log)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "READY")
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case "httpecho":
		ln, err := net.Listen("tcp", a.Listen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(httpEcho), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 300 * time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		fmt.Fprintln(stdout, "READY")
		select {
		case <-ctx.Done():
		case err := <-done:
			return err
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case "load":
		sc, closeFn, err := loadScenario(a, log)
		if err != nil {
			return err
		}
		defer closeFn()
		fmt.Fprintln(stdout, "READY")
		return loadLoop(ctx, sc, stdin, stdout)
	default:
		return fmt.Errorf("unknown child mode %q", a.Mode)
	}
}

// loadScenario is the load client's request: bus.Client through a
// Requester over NATS, or the HTTP/2 client with A's certificate.
func loadScenario(a childArgs, log *slog.Logger) (*scenario, func(), error) {
	if strings.HasPrefix(a.Target, "nats://") {
		nc, err := bus.Connect(a.Target, "bench load", log)
		if err != nil {
			return nil, nil, err
		}
		req, err := bus.NewRequester(nc, nil, log)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		subjects, err := contract.NewSubjects(contract.DefaultPrefix)
		if err != nil {
			return nil, nil, err
		}
		client := bus.NewClient(req, subjects, "/bench")
		return &scenario{name: "load", do: func(ctx context.Context, body, _ []byte) error {
			resp, err := client.Call(ctx, domainB, echoComponent, echoRPC, body)
			if err != nil {
				return err
			}
			return checkEcho(body, resp)
		}}, func() { _ = req.Close(); nc.Close() }, nil
	}
	cert, err := tls.LoadX509KeyPair(a.Cert, a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("load certificate: %w", err)
	}
	caPEM, err := os.ReadFile(a.CA)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("no CA certificate")
	}
	tr := &http2.Transport{
		TLSClientConfig:    &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: infraB, NextProtos: []string{"h2"}},
		DisableCompression: true,
	}
	return httpScenario("load", &http.Client{Transport: tr}, a.Target), tr.CloseIdleConnections, nil
}

// loadLoop runs the windows asked for on stdin.
func loadLoop(ctx context.Context, sc *scenario, stdin io.Reader, stdout io.Writer) error {
	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		var warmupMs, windowMs, inflight, body int
		if _, err := fmt.Sscanf(lines.Text(), "window %d %d %d %d", &warmupMs, &windowMs, &inflight, &body); err != nil {
			return fmt.Errorf("command %q: %w", lines.Text(), err)
		}
		marked := *sc
		marked.mark = func(edge string) { fmt.Fprintln(stdout, edge) }
		w, err := measure(ctx, &marked, Cell{Body: body, InFlight: inflight}, time.Duration(warmupMs)*time.Millisecond, time.Duration(windowMs)*time.Millisecond)
		if err != nil {
			return err
		}
		data, err := json.Marshal(loadResult{Lat: w.lat, Errors: w.errs, FirstErr: w.firstErr, Elapsed: w.elapsed})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "RESULT "+string(data))
	}
	if err := lines.Err(); err != nil {
		return err
	}
	return ctx.Err()
}
