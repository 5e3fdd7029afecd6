package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// rawSubject is the subject of the raw NATS echo.
const rawSubject = "bench.echo"

// natsServer returns the embedded NATS server of the nats and bus
// scenarios (one server, started on first use).
func (w *world) natsServer() (*server.Server, error) {
	w.mu.Lock()
	ns := w.benchNATS
	w.mu.Unlock()
	if ns != nil {
		return ns, nil
	}
	ns, err := testbed.StartNATS("")
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.benchNATS = ns
	w.mu.Unlock()
	w.onClose(func(context.Context) error {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	})
	return ns, nil
}

// natsConn connects to ns; the connection is closed at close.
func (w *world) natsConn(ns *server.Server, name string) (*nats.Conn, error) {
	nc, err := bus.Connect(ns.ClientURL(), name, w.log)
	if err != nil {
		return nil, err
	}
	w.onClose(func(context.Context) error { nc.Close(); return nil })
	return nc, nil
}

// natsScenario: nats.go Request against a plain subscriber that responds
// with the request's data, each on its own connection to an embedded
// server.
func (w *world) natsScenario() (*scenario, error) {
	ns, err := w.natsServer()
	if err != nil {
		return nil, err
	}
	srv, err := w.natsConn(ns, "raw echo")
	if err != nil {
		return nil, err
	}
	cli, err := w.natsConn(ns, "raw client")
	if err != nil {
		return nil, err
	}
	sub, err := srv.Subscribe(rawSubject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("pending limits: %w", err)
	}
	if err := srv.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	return &scenario{name: ScenarioNATS, do: func(ctx context.Context, body, _ []byte) error {
		msg, err := cli.RequestWithContext(ctx, rawSubject, body)
		if err != nil {
			return err
		}
		return checkEcho(body, msg.Data)
	}}, nil
}

// busScenario: bus.Client.Call on one connection and bus.Serve on another,
// on the same embedded server as natsScenario. A client publishes on
// fed.out.… (the federator's subjects) and a component serves fed.in.…,
// so the server maps the one subject onto the other (a literal NATS
// subject mapping, a map lookup in the server).
func (w *world) busScenario(ctx context.Context) (*scenario, error) {
	ns, err := w.natsServer()
	if err != nil {
		return nil, err
	}
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		return nil, err
	}
	out, err := subjects.Out(echoComponent, echoRPC, domainB)
	if err != nil {
		return nil, err
	}
	in, err := subjects.In(echoComponent, echoRPC, domainA)
	if err != nil {
		return nil, err
	}
	if err := ns.GlobalAccount().AddMapping(out, in); err != nil {
		return nil, fmt.Errorf("map %s to %s: %w", out, in, err)
	}
	srvConn, err := w.natsConn(ns, "bus echo")
	if err != nil {
		return nil, err
	}
	cliConn, err := w.natsConn(ns, "bus client")
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := bus.Serve(sctx, srvConn, subjects, echoComponent, echoHandler, w.log)
	if err != nil {
		cancel()
		return nil, err
	}
	w.onClose(func(ctx context.Context) error {
		defer cancel()
		return srv.Shutdown(ctx)
	})
	client, err := w.batchedClient(cliConn, subjects)
	if err != nil {
		return nil, err
	}
	return &scenario{name: ScenarioBus, do: func(ctx context.Context, body, _ []byte) error {
		resp, err := client.Call(ctx, domainB, echoComponent, echoRPC, body)
		if err != nil {
			return err
		}
		return checkEcho(body, resp)
	}}, nil
}

// goMTLSScenario: the HTTP/2 client to a Go HTTPS server that requires a
// client certificate (B's certificate, A's client certificate, TLS 1.3).
func (w *world) goMTLSScenario() (*scenario, error) {
	srv := &http.Server{
		Handler: http.HandlerFunc(httpEcho),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{w.serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    w.pool,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          nil,
	}
	addr, err := w.serveHTTP(srv)
	if err != nil {
		return nil, err
	}
	return httpScenario(ScenarioGoMTLS, w.h2Client(), "https://"+addr+echoPath), nil
}

// ingressScenario: the HTTP/2 client, as backend A's federator would, to
// B's ingress, which authenticates A (certificate SAN infraA is the SRV
// target of a.example.com) and asks the echo component over NATS.
func (w *world) ingressScenario() (*scenario, error) {
	return httpScenario(ScenarioIngress, w.h2Client(), "https://"+w.b.IngressAddr+echoPath), nil
}

// federatedScenario: a component of A calls the echo component of B
// through NATS A, federator A, ingress B and NATS B.
func (w *world) federatedScenario() (*scenario, error) {
	client, err := w.batchedClient(w.a.NATS, w.a.Subjects)
	if err != nil {
		return nil, err
	}
	return &scenario{name: ScenarioFederated, do: func(ctx context.Context, body, _ []byte) error {
		resp, err := client.Call(ctx, domainB, echoComponent, echoRPC, body)
		if err != nil {
			return err
		}
		return checkEcho(body, resp)
	}}, nil
}

// batchedClient is a bus client on nc whose requests go through a
// bus.Requester (publishes batched across concurrent calls), as a
// component serving many users at once would make them.
func (w *world) batchedClient(nc *nats.Conn, subjects contract.Subjects) (*bus.Client, error) {
	req, err := bus.NewRequester(nc, nil, w.log)
	if err != nil {
		return nil, err
	}
	w.onClose(func(context.Context) error { return req.Close() })
	return bus.NewClient(req, subjects, "/bench"), nil
}
