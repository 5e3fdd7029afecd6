package bus_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
)

// Seed corpora live in testdata/fuzz/<Name>/; f.Add adds a few more inline.

// headerFromString builds NATS headers from lines "key: value" (keys kept
// as they are: NATS headers are case-sensitive).
func headerFromString(s string) nats.Header {
	h := nats.Header{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h
}

func FuzzDecode(f *testing.F) {
	f.Add("ce-specversion: 1.0\nce-id: 1\nce-source: /brig\nce-type: fedbus.request", []byte(`{"a":1}`))
	f.Add("content-type: application/cloudevents+json",
		[]byte(`{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","data":{"a":1}}`))
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		msg := &nats.Msg{Subject: "fed.out.brig.rpc.b.example.com", Header: headerFromString(headers), Data: body}
		ev, err := bus.Decode(msg)
		if err != nil {
			if !errors.Is(err, contract.ErrInvalidRequest) {
				t.Fatalf("Decode error %v is not invalid-request", err)
			}
			return
		}
		if ev.ID == "" || ev.Source == "" || ev.Type == "" {
			t.Fatalf("Decode = %+v: a required attribute is empty", ev)
		}
		if ev.TimeoutMs < 0 {
			t.Fatalf("Decode = %+v: negative timeout", ev)
		}
		if o := ev.Object; !o.IsZero() && (!contract.ValidBucket(o.Bucket) || !contract.ValidObjectName(o.Name) || o.Size < 0) {
			t.Fatalf("Decode = %+v: invalid object reference", ev)
		}
		if ev.Structured != bus.WantsStructured(msg) {
			t.Fatalf("Decode Structured = %v, WantsStructured = %v", ev.Structured, !ev.Structured)
		}
		// Re-encoding in either mode decodes to the same event.
		for _, structured := range []bool{false, true} {
			in := ev
			in.Structured = structured
			back, err := bus.Decode(in.Message("_INBOX.x"))
			if err != nil {
				t.Fatalf("re-encoded %+v (structured %v) does not decode: %v", in, structured, err)
			}
			want := in.Data
			if structured {
				// JSON data is embedded in the structured event as JSON:
				// insignificant white space after the value is not kept.
				want = bytes.TrimRight(want, " \t\r\n")
				back.Data = bytes.TrimRight(back.Data, " \t\r\n")
			}
			if back.ID != in.ID || back.Type != in.Type || back.TraceParent != in.TraceParent ||
				back.OriginDomain != in.OriginDomain || back.TimeoutMs != in.TimeoutMs || back.Object != in.Object ||
				back.Structured != structured || !bytes.Equal(back.Data, want) {
				t.Fatalf("re-encoded (structured %v)\n%+v decodes to\n%+v", structured, in, back)
			}
		}
	})
}
