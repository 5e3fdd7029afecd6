package bus_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// decodeOK decodes msg, failing the test on error.
func decodeOK(tb testing.TB, msg *nats.Msg) bus.Event {
	tb.Helper()
	ev, err := bus.Decode(msg)
	if err != nil {
		tb.Fatalf("Decode: %v", err)
	}
	return ev
}

// binaryMsg builds a binary-mode message from header pairs.
func binaryMsg(tb testing.TB, body string, kv ...string) *nats.Msg {
	tb.Helper()
	if len(kv)%2 != 0 {
		tb.Fatalf("binaryMsg: odd number of header arguments")
	}
	h := nats.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &nats.Msg{Subject: "s", Header: h, Data: []byte(body)}
}

// structuredMsg builds a structured-mode message with body.
func structuredMsg(tb testing.TB, body string) *nats.Msg {
	tb.Helper()
	return &nats.Msg{Subject: "s", Header: nats.Header{contract.HeaderContentType: []string{contract.ContentTypeCEJSON}}, Data: []byte(body)}
}

func TestBinaryRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   bus.Event
		want map[string]string // headers of the encoded message
	}{
		{
			name: "every attribute",
			ev: bus.Event{
				ID: "req-1", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/json",
				TraceParent: testTraceParent, OriginDomain: "a.example.com", TimeoutMs: 1500,
				Data: []byte(`{"handle":"alice"}`),
			},
			want: map[string]string{
				"ce-specversion": "1.0", "ce-id": "req-1", "ce-source": "/brig", "ce-type": "fedbus.request",
				"ce-datacontenttype": "application/json", "ce-traceparent": testTraceParent,
				"ce-origindomain": "a.example.com", "ce-timeoutms": "1500",
			},
		},
		{
			name: "required only",
			ev:   bus.Event{ID: "req-2", Source: "//a.example.com/brig", Type: contract.TypeResponse},
			want: map[string]string{"ce-specversion": "1.0", "ce-id": "req-2", "ce-source": "//a.example.com/brig", "ce-type": "fedbus.response"},
		},
		{
			name: "object reference (section 8)",
			ev: bus.Event{ID: "req-4", Source: "/federator", Type: contract.TypeResponse, DataContentType: "application/octet-stream",
				Object: bus.ObjectRef{Bucket: "fedbus-objects", Name: "Yx2mTtZJd8ovUbwHDzxi3D", Size: 52428800}},
			want: map[string]string{"ce-specversion": "1.0", "ce-id": "req-4", "ce-source": "/federator", "ce-type": "fedbus.response",
				"ce-datacontenttype": "application/octet-stream", "Fedbus-Object-Bucket": "fedbus-objects",
				"Fedbus-Object-Name": "Yx2mTtZJd8ovUbwHDzxi3D", "Fedbus-Object-Size": "52428800"},
		},
		{
			name: "empty object",
			ev:   bus.Event{ID: "req-5", Source: "/federator", Type: contract.TypeResponse, Object: bus.ObjectRef{Bucket: "b", Name: "n", Size: 0}},
			want: map[string]string{"ce-specversion": "1.0", "ce-id": "req-5", "ce-source": "/federator", "ce-type": "fedbus.response",
				"Fedbus-Object-Bucket": "b", "Fedbus-Object-Name": "n", "Fedbus-Object-Size": "0"},
		},
		{
			name: "non-JSON data is untouched",
			ev:   bus.Event{ID: "3", Source: "/cargohold", Type: contract.TypeRequest, DataContentType: "application/octet-stream", Data: []byte{0, 1, 2, 0xff}},
			want: map[string]string{"ce-specversion": "1.0", "ce-id": "3", "ce-source": "/cargohold", "ce-type": "fedbus.request", "ce-datacontenttype": "application/octet-stream"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.ev.Message("fed.out.brig.rpc.b.example.com")
			if msg.Subject != "fed.out.brig.rpc.b.example.com" {
				t.Errorf("Subject = %q", msg.Subject)
			}
			got := map[string]string{}
			for k, v := range msg.Header {
				if len(v) != 1 {
					t.Errorf("header %s has %d values", k, len(v))
				}
				got[k] = v[0]
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("headers = %v\nwant      %v", got, tc.want)
			}
			if string(msg.Data) != string(tc.ev.Data) {
				t.Errorf("body = %q, want %q", msg.Data, tc.ev.Data)
			}
			if bus.WantsStructured(msg) {
				t.Error("binary message reported as structured")
			}
			back := decodeOK(t, msg)
			if !reflect.DeepEqual(back, tc.ev) {
				t.Errorf("round trip = %+v\nwant         %+v", back, tc.ev)
			}
		})
	}
}

func TestStructuredRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   bus.Event
	}{
		{"every attribute", bus.Event{
			ID: "req-1", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/json",
			TraceParent: testTraceParent, OriginDomain: "a.example.com", TimeoutMs: 1500,
			Data: []byte(`{"handle":"alice"}`), Structured: true,
		}},
		{"text data", bus.Event{ID: "2", Source: "/brig", Type: contract.TypeResponse, DataContentType: "text/plain", Data: []byte("hello, <world>"), Structured: true}},
		{"binary data", bus.Event{ID: "3", Source: "/cargohold", Type: contract.TypeResponse, DataContentType: "application/octet-stream", Data: []byte{0, 1, 0xfe, 0xff}, Structured: true}},
		{"declared JSON but is not", bus.Event{ID: "4", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/json", Data: []byte("{not json"), Structured: true}},
		{"no data", bus.Event{ID: "5", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/json", Structured: true}},
		{"object reference", bus.Event{ID: "6", Source: "/federator", Type: contract.TypeResponse, DataContentType: "image/png",
			Object: bus.ObjectRef{Bucket: "fedbus-objects", Name: "obj-1", Size: 3 << 30}, Structured: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.ev.Message("_INBOX.x")
			if ct := msg.Header.Get(contract.HeaderContentType); ct != contract.ContentTypeCEJSON {
				t.Errorf("content-type = %q, want %q", ct, contract.ContentTypeCEJSON)
			}
			if msg.Header.Get(contract.HeaderID) != "" || msg.Header.Get(contract.HeaderSpecVersion) != "" {
				t.Errorf("structured message has binary-mode headers: %v", msg.Header)
			}
			if !bus.WantsStructured(msg) {
				t.Error("WantsStructured = false")
			}
			var body map[string]any
			if err := json.Unmarshal(msg.Data, &body); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, msg.Data)
			}
			if body["specversion"] != "1.0" || body["id"] != tc.ev.ID || body["type"] != tc.ev.Type || body["source"] != tc.ev.Source {
				t.Errorf("body = %s", msg.Data)
			}
			if ref := tc.ev.Object; !ref.IsZero() {
				// The extensions carry the reference, and the headers too.
				if body[contract.ExtObjectBucket] != ref.Bucket || body[contract.ExtObjectName] != ref.Name ||
					body[contract.ExtObjectSize] != strconv.FormatInt(ref.Size, 10) || body["data"] != nil || body["data_base64"] != nil {
					t.Errorf("body = %s", msg.Data)
				}
				if msg.Header.Get(contract.HeaderObjectName) != ref.Name || msg.Header.Get(contract.HeaderObjectSize) != strconv.FormatInt(ref.Size, 10) {
					t.Errorf("headers = %v", msg.Header)
				}
			}
			back := decodeOK(t, msg)
			if !back.Structured {
				t.Error("decoded Structured = false")
			}
			if string(back.Data) != string(tc.ev.Data) {
				t.Errorf("Data = %q, want %q", back.Data, tc.ev.Data)
			}
			back.Data, tc.ev.Data = nil, nil // nil and empty are the same data
			if !reflect.DeepEqual(back, tc.ev) {
				t.Errorf("round trip = %+v\nwant         %+v", back, tc.ev)
			}
		})
	}
	t.Run("empty datacontenttype defaults to application/json", func(t *testing.T) {
		ev := bus.Event{ID: "1", Source: "/brig", Type: contract.TypeRequest, Data: []byte(`{}`), Structured: true}
		back := decodeOK(t, ev.Message("s"))
		if back.DataContentType != contract.ContentTypeJSON || string(back.Data) != `{}` {
			t.Errorf("decoded %q %q", back.DataContentType, back.Data)
		}
	})
}

func TestDecodeStructuredHandWritten(t *testing.T) {
	tests := []struct {
		name string
		ct   string
		body string
		want bus.Event
	}{
		{"JSON data and extensions",
			contract.ContentTypeCEJSON,
			`{"specversion":"1.0","id":"r1","source":"/brig","type":"fedbus.request","datacontenttype":"application/json",` +
				`"traceparent":"` + testTraceParent + `","origindomain":"a.example.com","timeoutms":"2500","data":{"handle":"alice"}}`,
			bus.Event{ID: "r1", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/json", TraceParent: testTraceParent,
				OriginDomain: "a.example.com", TimeoutMs: 2500, Data: []byte(`{"handle":"alice"}`), Structured: true}},
		{"numeric timeoutms",
			contract.ContentTypeCEJSON,
			`{"specversion":"1.0","id":"r2","source":"/brig","type":"fedbus.request","timeoutms":750}`,
			bus.Event{ID: "r2", Source: "/brig", Type: contract.TypeRequest, TimeoutMs: 750, Structured: true}},
		{"content-type with parameter",
			"application/cloudevents+json; charset=utf-8",
			`{"specversion":"1.0","id":"r3","source":"/brig","type":"fedbus.request","datacontenttype":"text/plain","data":"hi"}`,
			bus.Event{ID: "r3", Source: "/brig", Type: contract.TypeRequest, DataContentType: "text/plain", Data: []byte("hi"), Structured: true}},
		// The CloudEvents SDK reads a JSON number extension as a CloudEvents
		// Integer (int32) and truncates a fraction; binary mode refuses "1.5".
		{"fractional timeoutms truncated by the SDK",
			contract.ContentTypeCEJSON,
			`{"specversion":"1.0","id":"r5","source":"/brig","type":"fedbus.request","timeoutms":1.5}`,
			bus.Event{ID: "r5", Source: "/brig", Type: contract.TypeRequest, TimeoutMs: 1, Structured: true}},
		{"object reference as extensions, the size a number",
			contract.ContentTypeCEJSON,
			`{"specversion":"1.0","id":"r6","source":"/federator","type":"fedbus.response","datacontenttype":"application/octet-stream",` +
				`"fedbusobjectbucket":"fedbus-objects","fedbusobjectname":"o1","fedbusobjectsize":1024}`,
			bus.Event{ID: "r6", Source: "/federator", Type: contract.TypeResponse, DataContentType: "application/octet-stream",
				Object: bus.ObjectRef{Bucket: "fedbus-objects", Name: "o1", Size: 1024}, Structured: true}},
		{"base64 data",
			contract.ContentTypeCEJSON,
			`{"specversion":"1.0","id":"r4","source":"/brig","type":"fedbus.request","datacontenttype":"application/octet-stream","data_base64":"AAH/"}`,
			bus.Event{ID: "r4", Source: "/brig", Type: contract.TypeRequest, DataContentType: "application/octet-stream", Data: []byte{0, 1, 0xff}, Structured: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := &nats.Msg{Subject: "s", Header: nats.Header{contract.HeaderContentType: []string{tc.ct}}, Data: []byte(tc.body)}
			got := decodeOK(t, msg)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decode = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	full := []string{"ce-specversion", "1.0", "ce-id", "1", "ce-source", "/brig", "ce-type", contract.TypeRequest}
	without := func(name string) []string {
		var kv []string
		for i := 0; i < len(full); i += 2 {
			if full[i] != name {
				kv = append(kv, full[i], full[i+1])
			}
		}
		return kv
	}
	with := func(kv ...string) []string { return append(append([]string{}, full...), kv...) }
	const okStructured = `"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request"`
	tests := []struct {
		name string
		msg  *nats.Msg
	}{
		{"nil header", &nats.Msg{Subject: "s", Data: []byte(`{}`)}},
		{"zero message", &nats.Msg{}},
		{"empty header", &nats.Msg{Subject: "s", Header: nats.Header{}}},
		{"missing specversion", binaryMsg(t, "{}", without("ce-specversion")...)},
		{"missing id", binaryMsg(t, "{}", without("ce-id")...)},
		{"missing source", binaryMsg(t, "{}", without("ce-source")...)},
		{"missing type", binaryMsg(t, "{}", without("ce-type")...)},
		{"specversion 0.3", binaryMsg(t, "{}", "ce-specversion", "0.3", "ce-id", "1", "ce-source", "/brig", "ce-type", "t")},
		{"specversion 1.0 with space", binaryMsg(t, "{}", "ce-specversion", " 1.0", "ce-id", "1", "ce-source", "/brig", "ce-type", "t")},
		{"upper-case header names are not CloudEvents headers", binaryMsg(t, "{}", "Ce-Specversion", "1.0", "Ce-Id", "1", "Ce-Source", "/brig", "Ce-Type", "t")},
		{"timeoutms not a number", binaryMsg(t, "{}", with("ce-timeoutms", "soon")...)},
		{"timeoutms zero", binaryMsg(t, "{}", with("ce-timeoutms", "0")...)},
		{"timeoutms negative", binaryMsg(t, "{}", with("ce-timeoutms", "-5")...)},
		{"timeoutms fraction", binaryMsg(t, "{}", with("ce-timeoutms", "1.5")...)},
		{"timeoutms overflow", binaryMsg(t, "{}", with("ce-timeoutms", "99999999999999999999")...)},
		{"source not a URI reference", binaryMsg(t, "{}", "ce-specversion", "1.0", "ce-id", "1", "ce-source", "%zz", "ce-type", "t")},
		{"structured body not JSON", structuredMsg(t, "not json")},
		{"structured empty body", structuredMsg(t, "")},
		{"structured JSON array", structuredMsg(t, `[]`)},
		{"structured empty object", structuredMsg(t, `{}`)},
		{"structured missing id", structuredMsg(t, `{"specversion":"1.0","source":"/brig","type":"fedbus.request"}`)},
		{"structured missing source", structuredMsg(t, `{"specversion":"1.0","id":"1","type":"fedbus.request"}`)},
		{"structured missing type", structuredMsg(t, `{"specversion":"1.0","id":"1","source":"/brig"}`)},
		{"structured missing specversion", structuredMsg(t, `{"id":"1","source":"/brig","type":"fedbus.request"}`)},
		{"structured specversion 0.3", structuredMsg(t, `{"specversion":"0.3","id":"1","source":"/brig","type":"fedbus.request"}`)},
		{"structured timeoutms not a number", structuredMsg(t, `{`+okStructured+`,"timeoutms":"soon"}`)},
		{"structured timeoutms zero", structuredMsg(t, `{`+okStructured+`,"timeoutms":0}`)},
		{"structured timeoutms over int32", structuredMsg(t, `{`+okStructured+`,"timeoutms":3000000000}`)},
		{"structured timeoutms bool", structuredMsg(t, `{`+okStructured+`,"timeoutms":true}`)},
		{"object bucket alone", binaryMsg(t, "", with("Fedbus-Object-Bucket", "fedbus-objects")...)},
		{"object without size", binaryMsg(t, "", with("Fedbus-Object-Bucket", "b", "Fedbus-Object-Name", "n")...)},
		{"object size negative", binaryMsg(t, "", with("Fedbus-Object-Bucket", "b", "Fedbus-Object-Name", "n", "Fedbus-Object-Size", "-1")...)},
		{"object size with sign", binaryMsg(t, "", with("Fedbus-Object-Bucket", "b", "Fedbus-Object-Name", "n", "Fedbus-Object-Size", "+1")...)},
		{"object size not a number", binaryMsg(t, "", with("Fedbus-Object-Bucket", "b", "Fedbus-Object-Name", "n", "Fedbus-Object-Size", "1 MiB")...)},
		{"object bucket with a dot", binaryMsg(t, "", with("Fedbus-Object-Bucket", "KV.x", "Fedbus-Object-Name", "n", "Fedbus-Object-Size", "1")...)},
		{"object name with a space", binaryMsg(t, "", with("Fedbus-Object-Bucket", "b", "Fedbus-Object-Name", "a b", "Fedbus-Object-Size", "1")...)},
		{"structured object without name", structuredMsg(t, `{`+okStructured+`,"fedbusobjectbucket":"b","fedbusobjectsize":"1"}`)},
		{"structured object size fraction", structuredMsg(t, `{`+okStructured+`,"fedbusobjectbucket":"b","fedbusobjectname":"n","fedbusobjectsize":"1.5"}`)},
		{"structured binary headers ignored", func() *nats.Msg {
			m := binaryMsg(t, "not json", full...)
			m.Header.Set(contract.HeaderContentType, contract.ContentTypeCEJSON)
			return m
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := bus.Decode(tc.msg)
			if !errors.Is(err, contract.ErrInvalidRequest) {
				t.Fatalf("Decode = %+v, %v; want invalid-request", ev, err)
			}
			var e *contract.Error
			if !errors.As(err, &e) || e.Code != 400 {
				t.Errorf("error = %#v, want *contract.Error with code 400", err)
			}
			if !reflect.DeepEqual(ev, bus.Event{}) {
				t.Errorf("Decode returned %+v with an error", ev)
			}
		})
	}
}

func TestDecodeBinaryIgnoresOtherContentType(t *testing.T) {
	// A content-type header other than application/cloudevents+json (here
	// the batch format, which fedbus does not accept) leaves binary mode.
	for _, ct := range []string{"application/json", "application/cloudevents-batch+json", "not a media type;;"} {
		t.Run(ct, func(t *testing.T) {
			m := binaryMsg(t, "{}", "ce-specversion", "1.0", "ce-id", "1", "ce-source", "/brig", "ce-type", "t", contract.HeaderContentType, ct)
			ev := decodeOK(t, m)
			if ev.Structured || ev.ID != "1" {
				t.Errorf("Decode = %+v", ev)
			}
		})
	}
}

func TestReplies(t *testing.T) {
	for _, structured := range []bool{false, true} {
		name := "binary"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			req := bus.Event{ID: "q", Source: "/brig", Type: contract.TypeRequest, Structured: structured}
			r := bus.Reply(req, "/federator", []byte(`{"ok":true}`))
			if r.Type != contract.TypeResponse || r.Source != "/federator" || r.Structured != structured || r.ID != req.ID {
				t.Errorf("Reply = %+v", r)
			}
			back := decodeOK(t, r.Message("_INBOX.1"))
			if string(back.Data) != `{"ok":true}` || back.Type != contract.TypeResponse || back.Structured != structured {
				t.Errorf("decoded reply = %+v", back)
			}

			e := contract.RemoteError(contract.Errorf(contract.LabelInvalidDomain, "no SRV"))
			er := bus.ErrorReply(structured, "/federator", e)
			if er.Type != contract.TypeError || er.Structured != structured {
				t.Errorf("ErrorReply = %+v", er)
			}
			back = decodeOK(t, er.Message("_INBOX.1"))
			if got := contract.ParseError(500, back.Data); !reflect.DeepEqual(got, e) {
				t.Errorf("error reply body = %s, parsed %+v, want %+v", back.Data, got, e)
			}
		})
	}
	t.Run("NewID unique", func(t *testing.T) {
		seen := map[string]bool{}
		for range 1000 {
			id := bus.NewID()
			if seen[id] || !contract.ValidRequestID(id) {
				t.Fatalf("NewID = %q (seen %v)", id, seen[id])
			}
			seen[id] = true
		}
	})
}
