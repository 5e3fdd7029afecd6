package ingress

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestSuccess sends requests that pass every check, over HTTP/2 and
// HTTP/1.1, and checks what the component and the caller see.
func TestSuccess(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.serveEcho(t)
	galley := e.serveRaw(t, "galley", func(m *nats.Msg) *bus.Event { return response(`{"galley":true}`) })
	h2 := e.client(t, e.certA, false)
	h1 := e.client(t, e.certA, true)

	t.Run("echo over HTTP/2", func(t *testing.T) {
		resp, body := e.mustDo(t, h2, call{path: "/federation/brig/get-user-by-handle",
			header: with(origin(originA), "Request-Id", "req-123"), body: strings.NewReader(`{"handle":"alice"}`)})
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("got %s over HTTP/%d, want 200 over HTTP/2", describe(resp, body), resp.ProtoMajor)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var got echo
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		want := echo{ID: "req-123", Origin: originA, Component: "brig", RPC: "get-user-by-handle", Body: `{"handle":"alice"}`}
		if got != want {
			t.Errorf("component saw %+v, want %+v", got, want)
		}
	})

	t.Run("HTTP/1.1", func(t *testing.T) {
		resp, body := e.mustDo(t, h1, call{path: "/federation/brig/x", header: origin(originA)})
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			t.Fatalf("got %s over HTTP/%d, want 200 over HTTP/1.1", describe(resp, body), resp.ProtoMajor)
		}
	})

	t.Run("cloudevent attributes", func(t *testing.T) {
		tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		h := with(with(with(origin(originA), "Request-Id", "abc-42"), "traceparent", tp), "Request-Timeout-Ms", "5000")
		resp, body := e.mustDo(t, h2, call{path: "/federation/galley/on-conversation-updated", header: h, body: strings.NewReader(`[1,2]`)})
		if resp.StatusCode != http.StatusOK || string(body) != `{"galley":true}` {
			t.Fatalf("got %s", describe(resp, body))
		}
		m := recv(t, galley)
		if want := "fed.in.galley.on-conversation-updated.a.example.com"; m.subject != want {
			t.Errorf("subject %s, want %s", m.subject, want)
		}
		for k, want := range map[string]string{
			contract.HeaderSpecVersion:     "1.0",
			contract.HeaderID:              "abc-42",
			contract.HeaderType:            contract.TypeRequest,
			contract.HeaderSource:          "//a.example.com/galley",
			contract.HeaderOriginDomain:    originA,
			contract.HeaderTraceParent:     tp,
			contract.HeaderDataContentType: "application/json",
		} {
			if got := m.header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		ms, err := strconv.Atoi(m.header.Get(contract.HeaderTimeoutMs))
		if err != nil || ms <= 0 || ms > 5000 {
			t.Errorf("%s = %q, want 1..5000", contract.HeaderTimeoutMs, m.header.Get(contract.HeaderTimeoutMs))
		}
		if string(m.data) != `[1,2]` {
			t.Errorf("body %q", m.data)
		}
	})

	t.Run("invalid Request-Id gets a new id, bad traceparent dropped", func(t *testing.T) {
		h := with(with(origin(originA), "Request-Id", "has space"), "traceparent", "a b")
		resp, body := e.mustDo(t, h2, call{path: "/federation/galley/x", header: h})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s", describe(resp, body))
		}
		m := recv(t, galley)
		if id := m.header.Get(contract.HeaderID); id == "" || id == "has space" {
			t.Errorf("ce-id %q, want a new id", id)
		}
		if tp, ok := m.header[contract.HeaderTraceParent]; ok {
			t.Errorf("ce-traceparent %q forwarded", tp)
		}
	})

	t.Run("origin header variants", func(t *testing.T) {
		for name, h := range map[string]http.Header{
			"Wire-Domain only":           {contract.HTTPOriginDomainOld: {originA}},
			"both agree":                 {contract.HTTPOriginDomain: {originA}, contract.HTTPOriginDomainOld: {originA}},
			"both agree after case fold": {contract.HTTPOriginDomain: {"A.Example.COM"}, contract.HTTPOriginDomainOld: {originA}},
			"upper case":                 {contract.HTTPOriginDomain: {"A.EXAMPLE.COM"}},
		} {
			t.Run(name, func(t *testing.T) {
				resp, body := e.mustDo(t, h2, call{path: "/federation/brig/x", header: h})
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("got %s", describe(resp, body))
				}
				var got echo
				if err := json.Unmarshal(body, &got); err != nil || got.Origin != originA {
					t.Errorf("origin %q (%v), want %s", got.Origin, err, originA)
				}
			})
		}
	})

	t.Run("wildcard certificate name", func(t *testing.T) {
		resp, body := e.mustDo(t, e.client(t, e.certW, false), call{path: "/federation/brig/x", header: origin(originW)})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s", describe(resp, body))
		}
	})

	t.Run("backend C for its own domain", func(t *testing.T) {
		resp, body := e.mustDo(t, e.client(t, e.certC, false), call{path: "/federation/brig/x", header: origin(originC)})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s", describe(resp, body))
		}
	})

	t.Run("empty body", func(t *testing.T) {
		resp, body := e.mustDo(t, h2, call{path: "/federation/brig/x", header: origin(originA), body: http.NoBody})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s", describe(resp, body))
		}
	})
}

// refusal is a request the ingress must refuse.
type refusal struct {
	name   string
	cert   string // "A" (default), "C", "W", "none", "noSAN"
	c      call
	status int
	label  string
}

// TestRefusals checks every refusal label through a real TLS connection,
// and that no refused request reaches the bus.
func TestRefusals(t *testing.T) {
	e := newEnv(t, envOpts{maxBody: 1024})
	e.serveEcho(t)
	watch := e.watchBus(t)
	clients := map[string]*http.Client{
		"A":     e.client(t, e.certA, false),
		"C":     e.client(t, e.certC, false),
		"none":  e.client(t, nil, false),
		"noSAN": e.client(t, issue(t, e.ca, testbed.LeafOptions{CommonName: infraA}), false),
		"h1":    e.client(t, e.certA, true),
	}
	ok := "/federation/brig/get-user"
	a := origin(originA)
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + "." + strings.Repeat("e", 55) + ".com"
	cases := []refusal{
		// 1. client certificate
		{name: "no client certificate", cert: "none", c: call{path: ok, header: a}, status: 403, label: contract.LabelNoClientCertificate},
		{name: "no client certificate comes before the endpoint", cert: "none", c: call{method: "GET", path: "/nope"}, status: 403, label: contract.LabelNoClientCertificate},
		// 2. endpoint
		{name: "GET", c: call{method: "GET", path: ok, header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "PUT", c: call{method: "PUT", path: ok, header: a, body: strings.NewReader("{}")}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "query string", c: call{path: ok + "?x=1", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "empty query string", c: call{path: ok + "?", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "encoded slash", c: call{path: "/federation/brig/a%2Fb", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "dot dot", c: call{path: "/federation/brig/../x", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "dot dot rpc", c: call{path: "/federation/brig/..", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "upper-case component", c: call{path: "/federation/BRIG/x", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "extra segment", c: call{path: "/federation/brig/x/y", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "trailing slash", c: call{path: "/federation/brig/x/", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "no rpc", c: call{path: "/federation/brig", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "empty rpc", c: call{path: "/federation/brig/", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "double slash", c: call{path: "/federation//x", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "other prefix", c: call{path: "/Federation/brig/x", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "root", c: call{path: "/", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "rpc star", c: call{path: "/federation/brig/*", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "rpc greater-than", c: call{path: "/federation/brig/>", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "rpc with space", c: call{path: "/federation/brig/a%20b", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "rpc with dot", c: call{path: "/federation/brig/a.b", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "encoded letter", c: call{path: "/federation/brig/%61", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "rpc too long", c: call{path: "/federation/brig/" + strings.Repeat("x", 129), header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "component star", c: call{path: "/federation/*/x", header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "GET over HTTP/1.1", cert: "h1", c: call{method: "GET", path: ok, header: a}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "invalid endpoint comes before the origin", c: call{method: "GET", path: ok}, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "unknown component", c: call{path: "/federation/gundeck/x", header: a}, status: 403, label: contract.LabelUnknownComponent},
		{name: "unknown component comes before the rpc", c: call{path: "/federation/gundeck/a.b", header: a}, status: 403, label: contract.LabelUnknownComponent},
		// 3. origin
		{name: "origin missing", c: call{path: ok}, status: 403, label: contract.LabelNoOriginDomain},
		{name: "origin empty", c: call{path: ok, header: origin("")}, status: 403, label: contract.LabelNoOriginDomain},
		{name: "origin headers disagree", c: call{path: ok, header: with(a, contract.HTTPOriginDomainOld, originC)}, status: 403, label: contract.LabelNoOriginDomain},
		{name: "origin header twice", c: call{path: ok, header: http.Header{contract.HTTPOriginDomain: {originA, originA}}}, status: 403, label: contract.LabelNoOriginDomain},
		{name: "old origin header twice", c: call{path: ok, header: http.Header{contract.HTTPOriginDomainOld: {originA, originC}}}, status: 403, label: contract.LabelNoOriginDomain},
		{name: "origin star", c: call{path: ok, header: origin("*")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin greater-than", c: call{path: ok, header: origin(">")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin wildcard label", c: call{path: ok, header: origin("*.example.com")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin empty label", c: call{path: ok, header: origin("a..b")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin with space", c: call{path: ok, header: origin("a b.example.com")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin 300 characters", c: call{path: ok, header: origin(long)}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin trailing dot", c: call{path: ok, header: origin(originA + ".")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin one label", c: call{path: ok, header: origin("localhost")}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin with comma", c: call{path: ok, header: origin(originA + "," + originC)}, status: 403, label: contract.LabelDomainParseError},
		{name: "origin invalid in both headers", c: call{path: ok, header: http.Header{contract.HTTPOriginDomain: {"*"}, contract.HTTPOriginDomainOld: {"*"}}}, status: 403, label: contract.LabelDomainParseError},
		// 4. strategy
		{name: "origin not allowed", c: call{path: ok, header: origin(denied)}, status: 400, label: contract.LabelFederationDenied},
		{name: "origin not allowed comes before discovery", c: call{path: ok, header: origin("unknown.example.com")}, status: 400, label: contract.LabelFederationDenied},
		// 5. discovery
		{name: "no SRV record", c: call{path: ok, header: origin(noSRV)}, status: 422, label: contract.LabelInvalidDomain},
		{name: "empty SRV answer", c: call{path: ok, header: origin(emptySRV)}, status: 422, label: contract.LabelInvalidDomain},
		{name: "SRV target dot", c: call{path: ok, header: origin(dotSRV)}, status: 422, label: contract.LabelInvalidDomain},
		{name: "SERVFAIL", c: call{path: ok, header: origin(servFail)}, status: 400, label: contract.LabelDiscoveryFailure},
		{name: "discovery timeout", c: call{path: ok, header: with(origin(dropped), "Request-Timeout-Ms", "300")}, status: 504, label: contract.LabelTimeout},
		{name: "discovery error comes before the certificate names", cert: "noSAN", c: call{path: ok, header: origin(noSRV)}, status: 422, label: contract.LabelInvalidDomain},
		// 6. certificate names
		{name: "certificate of C claims origin A", cert: "C", c: call{path: ok, header: a}, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "certificate of A claims origin C", c: call{path: ok, header: origin(originC)}, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "certificate without DNS name", cert: "noSAN", c: call{path: ok, header: a}, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "spoof comes before the body", cert: "C", c: call{path: ok, header: a, body: bytes.NewReader(make([]byte, 4096))}, status: 403, label: contract.LabelAuthenticationFailure},
		// 7. body
		{name: "body over the limit", c: call{path: ok, header: a, body: bytes.NewReader(make([]byte, 1025))}, status: 413, label: contract.LabelPayloadTooLarge},
		{name: "body over the limit without length", c: call{path: ok, header: a, body: io.MultiReader(bytes.NewReader(make([]byte, 4096))), length: -1}, status: 413, label: contract.LabelPayloadTooLarge},
		{name: "body over the limit over HTTP/1.1", cert: "h1", c: call{path: ok, header: a, body: bytes.NewReader(make([]byte, 1<<20))}, status: 413, label: contract.LabelPayloadTooLarge},
		{name: "chunked body over the limit over HTTP/1.1", cert: "h1", c: call{path: ok, header: a, body: io.MultiReader(bytes.NewReader(make([]byte, 2048))), length: -1}, status: 413, label: contract.LabelPayloadTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert := tc.cert
			if cert == "" {
				cert = "A"
			}
			resp, body := e.mustDo(t, clients[cert], tc.c)
			wantError(t, resp, body, tc.status, tc.label)
			if n := watch.published(t); n != 0 {
				t.Fatalf("%d message(s) reached the bus", n)
			}
		})
	}

	t.Run("body at the limit passes", func(t *testing.T) {
		resp, body := e.mustDo(t, clients["A"], call{path: ok, header: a, body: bytes.NewReader(bytes.Repeat([]byte("x"), 1024))})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s", describe(resp, body))
		}
	})
}

// TestHandshakeRefusals checks that certificates the CA did not issue for
// client authentication fail the TLS handshake and publish nothing.
func TestHandshakeRefusals(t *testing.T) {
	e := newEnv(t, envOpts{})
	watch := e.watchBus(t)
	other := newCA(t, "other CA")
	cases := []struct {
		name string
		cert *testbed.Leaf
	}{
		{"certificate of another CA", issue(t, other, testbed.LeafOptions{}, infraA)},
		{"server-only certificate", issue(t, e.ca, testbed.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, infraA)},
	}
	for _, tc := range cases {
		for _, http1 := range []bool{false, true} {
			t.Run(tc.name+" http1="+strconv.FormatBool(http1), func(t *testing.T) {
				resp, body, err := e.do(t, e.client(t, tc.cert, http1), call{path: "/federation/brig/x", header: origin(originA)})
				if err == nil {
					t.Fatalf("request succeeded: %s", describe(resp, body))
				}
				if n := watch.published(t); n != 0 {
					t.Fatalf("%d message(s) reached the bus", n)
				}
			})
		}
	}
}

// TestDiscoveryDown checks discovery-failure when no DNS server answers.
func TestDiscoveryDown(t *testing.T) {
	e := newEnv(t, envOpts{dnsDown: true})
	watch := e.watchBus(t)
	resp, body := e.mustDo(t, e.client(t, e.certA, false), call{path: "/federation/brig/x", header: origin(originA)})
	wantError(t, resp, body, http.StatusBadRequest, contract.LabelDiscoveryFailure)
	if n := watch.published(t); n != 0 {
		t.Fatalf("%d message(s) reached the bus", n)
	}
}

// TestComponentAnswers checks how component replies and NATS failures
// become HTTP responses.
func TestComponentAnswers(t *testing.T) {
	e := newEnv(t, envOpts{})
	notFound := &contract.Error{Code: 404, Label: "not-found", Message: "no such asset"}
	e.serveRaw(t, "cargohold", func(m *nats.Msg) *bus.Event {
		route, err := e.subjects.ParseIn(m.Subject)
		if err != nil {
			return errorReply(contract.AsError(err))
		}
		switch route.RPC {
		case "not-found":
			return errorReply(notFound)
		case "code-200":
			return errorReply(&contract.Error{Code: 200, Label: "odd", Message: "an error with a success code"})
		case "code-999":
			return errorReply(&contract.Error{Code: 999, Label: "odd", Message: "an error with a bad code"})
		case "not-contract":
			ev := &bus.Event{ID: bus.NewID(), Source: "/test", Type: contract.TypeError, Data: []byte("boom")}
			return ev
		case "silent":
			return nil
		case "plain":
			return &bus.Event{ID: bus.NewID(), Source: "/test", Type: "something.else", Data: []byte(`"ok"`)}
		}
		return response(`{}`)
	})
	client := e.client(t, e.certA, false)
	a := origin(originA)

	t.Run("component error passes through", func(t *testing.T) {
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/not-found", header: a})
		wantError(t, resp, body, 404, "not-found")
		if string(body) != string(notFound.JSON()) {
			t.Errorf("body %s, want %s", body, notFound.JSON())
		}
	})
	t.Run("error with code 200 becomes 500", func(t *testing.T) {
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/code-200", header: a})
		wantError(t, resp, body, 500, "odd")
	})
	t.Run("error with code 999 becomes 500", func(t *testing.T) {
		// contract.ParseError does not take a code outside 100-599 for a
		// contract error: the body becomes unknown-federation-error.
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/code-999", header: a})
		wantError(t, resp, body, 500, contract.LabelUnknownError)
	})
	t.Run("error that is not a contract body", func(t *testing.T) {
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/not-contract", header: a})
		wantError(t, resp, body, 500, contract.LabelUnknownError)
	})
	t.Run("any other type is a success", func(t *testing.T) {
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/plain", header: a})
		if resp.StatusCode != 200 || string(body) != `"ok"` {
			t.Fatalf("got %s", describe(resp, body))
		}
	})
	t.Run("component timeout", func(t *testing.T) {
		start := time.Now()
		resp, body := e.mustDo(t, client, call{path: "/federation/cargohold/silent", header: with(a, "Request-Timeout-Ms", "300")})
		wantError(t, resp, body, http.StatusGatewayTimeout, contract.LabelTimeout)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v, the caller's 300ms should bound it", d)
		}
	})
	t.Run("component unavailable", func(t *testing.T) {
		resp, body := e.mustDo(t, client, call{path: "/federation/spar/x", header: a})
		wantError(t, resp, body, http.StatusServiceUnavailable, contract.LabelComponentUnavailable)
	})
}

// TestConfiguredTimeout checks that FED_REQUEST_TIMEOUT bounds a request
// whose caller asks for more time.
func TestConfiguredTimeout(t *testing.T) {
	e := newEnv(t, envOpts{timeout: 300 * time.Millisecond})
	ch := e.serveRaw(t, "brig", func(*nats.Msg) *bus.Event { return nil })
	start := time.Now()
	resp, body := e.mustDo(t, e.client(t, e.certA, false), call{path: "/federation/brig/x", header: with(origin(originA), "Request-Timeout-Ms", "60000")})
	wantError(t, resp, body, http.StatusGatewayTimeout, contract.LabelTimeout)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	m := recv(t, ch)
	if ms, err := strconv.Atoi(m.header.Get(contract.HeaderTimeoutMs)); err != nil || ms > 300 {
		t.Errorf("ce-timeoutms %q, want at most 300", m.header.Get(contract.HeaderTimeoutMs))
	}
}

// TestShutdown checks that Shutdown lets a request in flight finish and
// that Serve then returns http.ErrServerClosed.
func TestShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	held := make(chan struct{}, 1)
	nc := connect(t, e.ns)
	_, err := nc.QueueSubscribe("fed.in.brig.>", "brig", func(m *nats.Msg) {
		held <- struct{}{}
		<-release
		_ = m.RespondMsg(response(`{"late":true}`).Message(m.Reply))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	client := e.client(t, e.certA, false)
	type result struct {
		resp *http.Response
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, body, err := e.do(t, client, call{path: "/federation/brig/x", header: origin(originA)})
		done <- result{resp, body, err}
	}()
	select {
	case <-held:
	case r := <-done:
		t.Fatalf("request finished before reaching the component: %v %v", r.err, r.resp)
	case <-time.After(15 * time.Second):
		t.Fatal("request did not reach the component")
	}
	if e.in.Addr() == nil {
		t.Fatal("Addr is nil while serving")
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- e.in.Shutdown(ctx)
	}()
	// The listener closes: poll until a new connection is refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.in.Addr().String(), time.Second)
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepts after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	releaseAll()
	r := within(t, done, "the in-flight request")
	if r.err != nil || r.resp.StatusCode != http.StatusOK || string(r.body) != `{"late":true}` {
		t.Fatalf("in-flight request: %v %v", r.err, r.resp)
	}
	if err := within(t, shut, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := within(t, e.serveErr, "Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	e.serveErr <- http.ErrServerClosed // for the cleanup
}
