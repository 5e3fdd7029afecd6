package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/test/testbed"
)

func TestBrigHandle(t *testing.T) {
	b := NewBrig("b.example.com")
	tests := []struct {
		name    string
		rpc     string
		body    string
		timeout time.Duration
		want    string // response body, or prefix "label:" for an error
	}{
		{"alice", "get-user-by-handle", `"alice"`, 0, `{"id":{"id":"` + userID("b.example.com", "alice") + `","domain":"b.example.com"},"name":"Alice","handle":"alice","accent_id":1}`},
		{"unknown handle", "get-user-by-handle", `"mallory"`, 0, "null"},
		{"handle not a string", "get-user-by-handle", `42`, 0, "label:" + contract.LabelInvalidRequest},
		{"echo", "echo", `{"x":[1,2]}`, 0, `{"x":[1,2]}`},
		{"slow", "slow", `20`, 0, `{"slept_ms":20}`},
		{"slow past deadline", "slow", `5000`, 50 * time.Millisecond, "label:" + contract.LabelTimeout},
		{"slow bad body", "slow", `"x"`, 0, "label:" + contract.LabelInvalidRequest},
		{"slow negative", "slow", `-1`, 0, "label:" + contract.LabelInvalidRequest},
		{"unknown rpc", "nope", `null`, 0, "label:" + contract.LabelInvalidEndpoint},
		{"stream-asset bad body", "stream-asset", `{"size":-1}`, 0, "label:" + contract.LabelInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			got, err := b.Handle(ctx, &bus.Request{Component: "brig", RPC: tc.rpc, Origin: "a.example.com", Body: []byte(tc.body)})
			if label, ok := strings.CutPrefix(tc.want, "label:"); ok {
				if e := contract.AsError(err); err == nil || e.Label != label {
					t.Fatalf("err = %v, want label %s", err, label)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("body %s, want %s", got, tc.want)
			}
		})
	}
	if b.Served() != int64(len(tests)) {
		t.Errorf("Served() = %d, want %d", b.Served(), len(tests))
	}
}

func TestUserIDStable(t *testing.T) {
	a1, a2 := userID("b.example.com", "alice"), userID("b.example.com", "alice")
	if a1 != a2 || a1 == userID("a.example.com", "alice") {
		t.Errorf("IDs not derived from domain and handle: %s %s", a1, a2)
	}
	if len(a1) != 36 || a1[14] != '5' {
		t.Errorf("ID %q is not a version 5 UUID", a1)
	}
}

func startNATS(tb testing.TB) string {
	tb.Helper()
	ns, err := testbed.StartNATS("")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

func TestServeAnswersInboundRequests(t *testing.T) {
	url := startNATS(t)
	env := envconfig.MapLookuper(map[string]string{"FED_NATS_URL": url, "FED_DOMAIN": "b.example.com"})
	ctx, cancel := context.WithCancel(context.Background())
	var logs testbed.LogBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, env, &logs, &logs) }()

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Act as the ingress: publish on fed.in.brig.<rpc>.<origin>.
	ev := bus.Event{ID: bus.NewID(), Source: "//a.example.com/brig", Type: contract.TypeRequest, OriginDomain: "a.example.com", Data: []byte(`"bob"`)}
	var resp []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		resp, err = bus.Exchange(rctx, nc, ev.Message("fed.in.brig.get-user-by-handle.a.example.com"))
		rcancel()
		if err == nil || !errors.Is(err, contract.ErrComponentUnavailable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("request: %v\nlogs:\n%s", err, logs.String())
	}
	var p Profile
	if err := json.Unmarshal(resp, &p); err != nil || p.Handle != "bob" || p.ID.Domain != "b.example.com" {
		t.Errorf("response %s (%v)", resp, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit status %d; logs:\n%s", code, logs.String())
	}
	if !strings.Contains(logs.String(), `"served":1`) {
		t.Errorf("final log does not count the request:\n%s", logs.String())
	}
}

func TestCallPrintsResponse(t *testing.T) {
	url := startNATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A fake federator: answers b.example.com, fails c.example.com.
	_, err = nc.QueueSubscribe("fed.out.>", contract.FederatorQueueGroup, func(m *nats.Msg) {
		ev, err := bus.Decode(m)
		if err != nil {
			return
		}
		reply := bus.Reply(ev, "//a.example.com/federator", []byte(`{"echo":`+string(ev.Data)+`}`))
		if strings.HasSuffix(m.Subject, ".c.example.com") {
			reply = bus.ErrorReply(false, "//a.example.com/federator", contract.Errorf(contract.LabelFederationDenied, "not allowed"))
		}
		_ = m.RespondMsg(reply.Message(m.Reply))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	env := envconfig.MapLookuper(map[string]string{"FED_NATS_URL": url})
	tests := []struct {
		name    string
		args    []string
		code    int
		stdout  string
		stderr  string
		timeout time.Duration
	}{
		{"success", []string{"call", "b.example.com", "brig", "get-user-by-handle", `"alice"`}, 0, `{"echo":"alice"}` + "\n", "", 0},
		{"contract error", []string{"call", "c.example.com", "brig", "get-user-by-handle", `"alice"`}, 1, "", `"label":"federation-denied"`, 0},
		{"retries until the deadline", []string{"call", "-retry-for", "1200ms", "c.example.com", "brig", "x", `1`}, 1, "", `"label":"federation-denied"`, time.Second},
		{"invalid token", []string{"call", "b..example.com", "brig", "x", `1`}, 1, "", `"label":"domain-parse-error"`, 0},
		{"missing arguments", []string{"call", "b.example.com"}, 2, "", "wants <target-domain>", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr testbed.LogBuffer
			start := time.Now()
			code := run(context.Background(), tc.args, env, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if stdout.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.stderr)
			}
			if el := time.Since(start); el < tc.timeout {
				t.Errorf("returned after %v, want at least %v", el, tc.timeout)
			}
		})
	}
}

// TestStreamAsset: the stand-in served as cargohold answers stream-asset
// with the generated asset through the object store, and call -sha256
// prints its digest; a fake federator forwards fed.out to fed.in on the
// same NATS server (so the object is in the caller's store).
func TestStreamAsset(t *testing.T) {
	ns, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()
	ctx, cancel := context.WithCancel(context.Background())
	var logs testbed.LogBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, envconfig.MapLookuper(map[string]string{
			"FED_NATS_URL": url, "FED_DOMAIN": "b.example.com", "STANDIN_COMPONENT": "cargohold"}), &logs, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exit status %d; logs:\n%s", code, logs.String())
		}
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.QueueSubscribe("fed.out.>", contract.FederatorQueueGroup, func(m *nats.Msg) {
		ev, err := bus.Decode(m)
		if err != nil {
			return
		}
		route, err := subjects.ParseOut(m.Subject)
		if err != nil {
			return
		}
		in, _ := subjects.In(route.Component, route.RPC, "a.example.com")
		ev.OriginDomain, ev.Source = "a.example.com", "//a.example.com/"+route.Component
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		reply, err := nc.RequestMsgWithContext(rctx, ev.Message(in))
		if err != nil {
			// Answered like the federator does (component-unavailable
			// while serve is not subscribed yet: the caller retries).
			reply = bus.ErrorReply(ev.Structured, "//a.example.com/federator", bus.NATSError(in, err)).Message(m.Reply)
		}
		reply.Subject = m.Reply
		_ = nc.PublishMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	const size = 3<<20 + 5
	var stdout, stderr testbed.LogBuffer
	code := run(context.Background(), []string{"call", "-retry-for", "15s", "-timeout", "30s", "-sha256", "b.example.com", "cargohold", asset.RPC,
		string(asset.Body("3-2-standin", size))}, envconfig.MapLookuper(map[string]string{"FED_NATS_URL": url}), &stdout, &stderr)
	sum := asset.Digest("3-2-standin", size)
	want := fmt.Sprintf("sha256 %x  %d bytes  application/octet-stream\n", sum[:], size)
	if code != 0 || stdout.String() != want {
		t.Fatalf("exit status %d, stdout %q, want %q; stderr:\n%s\nserve logs:\n%s", code, stdout.String(), want, stderr.String(), logs.String())
	}
}
