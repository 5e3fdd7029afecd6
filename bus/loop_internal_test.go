package bus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestLoopPublishFailed: a reply whose publish fails is replaced by a
// small error reply to the same inbox, so that the caller is answered at
// once; when that cannot be published either, the loss is logged at WARN
// with the request id.
func TestLoopPublishFailed(t *testing.T) {
	s, err := testbed.StartNATS("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	logs := &testbed.LogBuffer{}
	l := &Loop{cfg: LoopConfig{Source: "/test"}, nc: nc, log: slog.New(slog.NewJSONHandler(logs, nil))}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	big := Event{ID: "req-1", Source: "/test", Type: contract.TypeResponse, Data: bytes.Repeat([]byte("x"), 2<<20)}

	t.Run("answered with an error reply", func(t *testing.T) {
		l.publishFailed(big.Message(inbox), "req-1", nats.ErrMaxPayload)
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no error reply: %v", err)
		}
		ev, err := Decode(msg)
		if err != nil || ev.Type != contract.TypeError {
			t.Fatalf("reply %+v, %v; want a fedbus.error", ev, err)
		}
		if e := contract.ParseError(0, ev.Data); e.Label != contract.LabelPayloadTooLarge {
			t.Errorf("error reply %s, want payload-too-large", ev.Data)
		}
	})
	t.Run("lost and logged", func(t *testing.T) {
		nc.Close()
		l.publishFailed(big.Message(inbox), "req-2", nats.ErrConnectionClosed)
		if !strings.Contains(logs.String(), `"level":"WARN","msg":"reply lost`) || !strings.Contains(logs.String(), `"request_id":"req-2"`) {
			t.Errorf("no WARN line for the lost reply: %s", logs.String())
		}
	})
}
