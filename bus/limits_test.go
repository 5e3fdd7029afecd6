package bus_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

// atOnce is how soon an over-size message or a failed publish must be
// answered: far from the deadline of these calls (an hour), which is what
// the caller would otherwise wait for. Measured: microseconds, 30 ms for
// a 2 MiB reply with the race detector.
const atOnce = time.Second

// TestOverSizeAndFailedPublishAnsweredAtOnce: with a NATS server at its
// default limits (1 MiB per message), a request or a reply that the server
// cannot carry, and a request whose publish fails, end at once with the
// contract's error, on every path: a Client on the connection, a Client on
// a Requester, a Server (Loop) whose handler answers too much.
func TestOverSizeAndFailedPublishAnsweredAtOnce(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	startFederator(t, connect(t, url), subjects)
	srvConn := connect(t, url)
	if got := srvConn.MaxPayload(); got != 1<<20 {
		t.Fatalf("test server max_payload = %d, want the default 1 MiB", got)
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	srv, err := bus.Serve(context.Background(), srvConn, subjects, "brig", func(_ context.Context, r *bus.Request) ([]byte, error) {
		return bytes.Repeat([]byte("y"), 2<<20), nil
	}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	closedConn, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	closedReq, err := bus.NewRequester(closedConn, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closedReq.Close() })
	closedConn.Close()

	tests := []struct {
		name  string
		call  func(ctx context.Context) error
		label string
	}{
		{"request over max payload, on the connection", func(ctx context.Context) error {
			_, err := bus.NewClient(connect(t, url), subjects, "/brig").Call(ctx, "b.example.com", "brig", "echo", big)
			return err
		}, contract.LabelPayloadTooLarge},
		{"request over max payload, on a Requester", func(ctx context.Context) error {
			_, err := bus.NewClient(newRequester(t, connect(t, url)), subjects, "/brig").Call(ctx, "b.example.com", "brig", "echo", big)
			return err
		}, contract.LabelPayloadTooLarge},
		{"reply over max payload, from a Server", func(ctx context.Context) error {
			subject, err := subjects.In("brig", "echo", "a.example.com")
			if err != nil {
				return err
			}
			ev := bus.Event{ID: bus.NewID(), Source: "//a.example.com/brig", Type: contract.TypeRequest, Data: []byte(`{}`)}
			_, err = bus.Exchange(ctx, newRequester(t, connect(t, url)), ev.Message(subject))
			return err
		}, contract.LabelPayloadTooLarge},
		{"publish on a closed connection, on a Requester", func(ctx context.Context) error {
			_, err := bus.NewClient(closedReq, subjects, "/brig").Call(ctx, "b.example.com", "brig", "echo", []byte(`{}`))
			return err
		}, contract.LabelComponentUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call(testCtx(t, time.Hour))
			took := time.Since(start)
			var e *contract.Error
			if !errors.As(err, &e) || e.Label != tc.label || e.Code != contract.StatusOf(tc.label) {
				t.Fatalf("error = %v, want %s", err, tc.label)
			}
			if took > atOnce {
				t.Errorf("answered after %v, want at once (under %v)", took, atOnce)
			}
		})
	}
}

// TestRequesterReplyTokens: the reply subjects of 10,000 requests of one
// Requester are all distinct, 128-bit tokens under its inbox, and not a
// sequence (no two consecutive ones are close as numbers, as a counter's
// would be).
func TestRequesterReplyTokens(t *testing.T) {
	url := startNATS(t)
	var (
		mu      sync.Mutex
		replies []string
	)
	subscribe(t, url, "token", func(m *nats.Msg) {
		mu.Lock()
		replies = append(replies, m.Reply)
		mu.Unlock()
		_ = m.Respond(nil)
	})
	r := newRequester(t, connect(t, url))
	const n = 10000
	ctx := testCtx(t, 30*time.Second)
	// One request after the other: the order of the tokens is the order
	// in which the Requester made them.
	for i := range n {
		if _, err := r.RequestMsgWithContext(ctx, &nats.Msg{Subject: "token"}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(replies) != n {
		t.Fatalf("%d requests seen, want %d", len(replies), n)
	}
	prefix := replies[0][:strings.LastIndexByte(replies[0], '.')+1]
	seen := make(map[string]bool, n)
	var prev *big.Int
	for i, reply := range replies {
		token, ok := strings.CutPrefix(reply, prefix)
		if !ok {
			t.Fatalf("reply subject %q is not under the inbox %q", reply, prefix)
		}
		if seen[token] {
			t.Fatalf("token %q used twice", token)
		}
		seen[token] = true
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || len(raw) != 16 {
			t.Fatalf("token %q is not 16 bytes of base64url: %v", token, err)
		}
		v := new(big.Int).SetBytes(raw)
		if prev != nil {
			// A counter's next value is within 2^64 of the last one; two
			// random 128-bit values are that close with probability 2^-63.
			if d := new(big.Int).Sub(v, prev); d.CmpAbs(new(big.Int).Lsh(big.NewInt(1), 64)) < 0 {
				t.Fatalf("tokens %d and %d are close as numbers (difference %v): a sequence", i-1, i, d)
			}
		}
		prev = v
	}
}

// TestConnectErrorHidesPassword: a failed connect names the URLs without
// their password or token, whatever the failure.
func TestConnectErrorHidesPassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // nothing listens there any more
	const secret = "s3cret-Passw0rd"
	tests := []struct{ name, urls string }{
		{"nothing listening", "nats://fedbus:" + secret + "@127.0.0.1:" + port},
		{"token, nothing listening", "nats://" + secret + "@127.0.0.1:" + port},
		{"unparsable URL", "nats://fedbus:" + secret + "@127.0.0.1:notaport"},
		{"second of two URLs unparsable", "nats://127.0.0.1:" + port + ",nats://fedbus:" + secret + "@[::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := bus.Connect(tc.urls, "test", discardLogger(), nats.Timeout(time.Second))
			if err == nil {
				nc.Close()
				t.Fatal("connect succeeded")
			}
			for e := err; e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), secret) {
					t.Fatalf("error %q contains the password", e)
				}
			}
			if !strings.Contains(err.Error(), "xxxxx@") {
				t.Errorf("error %q does not name the (masked) URL", err)
			}
		})
	}
}
