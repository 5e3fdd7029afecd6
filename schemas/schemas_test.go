package schemas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// ---------------------------------------------------------------------------
// helpers

// decodeDoc parses one of the embedded documents as plain JSON.
func decodeDoc(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not a JSON object: %v", err)
	}
	return doc
}

// lookup follows a JSON pointer ("/a/b") in a decoded document.
func lookup(doc any, ptr string) (any, bool) {
	v := doc
	if ptr == "" {
		return v, true
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[tok]; !ok {
			return nil, false
		}
	}
	return v, true
}

// compileAt compiles any location of the embedded documents (the public API
// only exposes components.schemas).
func compileAt(t *testing.T, loc string) *jsonschema.Schema {
	t.Helper()
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if err := reg.init(); err != nil {
		t.Fatal(err)
	}
	s, err := reg.compile(loc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func schema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	s, err := AsyncAPISchema(name)
	if err != nil {
		t.Fatalf("AsyncAPISchema(%q): %v", name, err)
	}
	return s
}

// errNotJSON is returned by validateJSON for a text that is not JSON.
var errNotJSON = errors.New("not JSON")

// validateJSON validates a JSON text against a compiled schema.
func validateJSON(s *jsonschema.Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: %v (%q)", errNotJSON, err, data)
	}
	return s.Validate(v)
}

// validateMessage validates a NATS message: its headers against the
// headers schema and, when payload is not empty, its body against the
// payload schema (both names of components.schemas).
func validateMessage(t *testing.T, msg *nats.Msg, headers, payload string) error {
	t.Helper()
	if err := ValidateHeaders(headers, msg.Header); err != nil {
		return fmt.Errorf("headers vs %s: %w", headers, err)
	}
	if payload == "" {
		return nil
	}
	if err := validateJSON(schema(t, payload), msg.Data); err != nil {
		return fmt.Errorf("body vs %s: %w", payload, err)
	}
	return nil
}

// structuredData returns the data of a structured-mode event body, decoded
// from data_base64 when the producer used that form.
func structuredData(t *testing.T, body []byte) []byte {
	t.Helper()
	var ev struct {
		Data       json.RawMessage `json:"data"`
		DataBase64 []byte          `json:"data_base64"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatalf("structured body: %v", err)
	}
	if ev.DataBase64 != nil {
		return ev.DataBase64
	}
	return ev.Data
}

// expectValid fails the test when err and wantValid disagree.
func expectValid(t *testing.T, err error, wantValid bool) {
	t.Helper()
	switch {
	case wantValid && err != nil:
		t.Errorf("want valid, got: %v", err)
	case !wantValid && err == nil:
		t.Errorf("want a validation error, got none")
	case !wantValid:
		var verr *jsonschema.ValidationError
		if !errors.As(err, &verr) && !errors.Is(err, errNotJSON) {
			t.Errorf("want a *jsonschema.ValidationError, got %T: %v", err, err)
		}
		t.Logf("rejected as expected: %v", err)
	}
}

func withoutHeader(m *nats.Msg, keys ...string) *nats.Msg {
	for _, k := range keys {
		delete(m.Header, k)
	}
	return m
}

func withHeader(m *nats.Msg, k, v string) *nats.Msg {
	m.Header[k] = []string{v}
	return m
}

// ---------------------------------------------------------------------------
// the documents

func TestDocumentsAreJSON(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		copy []byte
	}{
		{"error.schema.json", errorSchemaJSON, ErrorSchemaJSON()},
		{"asyncapi.json", asyncAPIJSON, AsyncAPIJSON()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !json.Valid(tt.data) {
				t.Fatal("not valid JSON")
			}
			decodeDoc(t, tt.data)
			if !bytes.Equal(tt.data, tt.copy) {
				t.Error("the exported copy differs from the embedded file")
			}
		})
	}
}

func TestErrorSchemaDocument(t *testing.T) {
	doc := decodeDoc(t, errorSchemaJSON)
	tests := []struct {
		name string
		ptr  string
		want any
	}{
		{"draft 2020-12", "/$schema", "https://json-schema.org/draft/2020-12/schema"},
		{"$id", "/$id", ErrorSchemaURL},
		{"closed object", "/additionalProperties", false},
		{"code minimum", "/properties/code/minimum", 100.0},
		{"code maximum", "/properties/code/maximum", 599.0},
		{"label pattern", "/properties/label/pattern", "^[a-z0-9-]+$"},
		{"inner is recursive", "/properties/inner/$ref", "#"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := lookup(doc, tt.ptr)
			if !ok || got != tt.want {
				t.Errorf("%s = %v, want %v", tt.ptr, got, tt.want)
			}
		})
	}
	t.Run("required", func(t *testing.T) {
		got, _ := lookup(doc, "/required")
		want := []any{"code", "label", "message"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("required = %v, want %v", got, want)
		}
	})
	t.Run("label is not an enum", func(t *testing.T) {
		if _, ok := lookup(doc, "/properties/label/enum"); ok {
			t.Error("label must not be restricted to an enum: remote backends use labels of their own")
		}
	})
}

// TestLabelsDocumented checks that error.schema.json documents every label of
// the bus package, with the status that contract.StatusOf gives it.
func TestLabelsDocumented(t *testing.T) {
	doc := decodeDoc(t, errorSchemaJSON)
	examples, _ := lookup(doc, "/properties/label/examples")
	comment, _ := doc["$comment"].(string)
	labels := []string{
		contract.LabelFederationDenied, contract.LabelInvalidEndpoint, contract.LabelInvalidRequest,
		contract.LabelUnknownComponent, contract.LabelNoOriginDomain, contract.LabelDomainParseError,
		contract.LabelNoClientCertificate, contract.LabelAuthenticationFailure, contract.LabelInvalidDomain,
		contract.LabelDiscoveryFailure, contract.LabelConnectionRefused, contract.LabelTLSError,
		contract.LabelRemoteError, contract.LabelTimeout, contract.LabelComponentUnavailable,
		contract.LabelPayloadTooLarge, contract.LabelTooManyRequests, contract.LabelServerError,
	}
	for _, label := range labels {
		t.Run(label, func(t *testing.T) {
			if !slices.Contains(examples.([]any), any(label)) {
				t.Errorf("label %q missing from properties.label.examples", label)
			}
			if want := fmt.Sprintf("%s %d", label, contract.StatusOf(label)); !strings.Contains(comment, want) {
				t.Errorf("$comment does not document %q", want)
			}
		})
	}
	t.Run(contract.LabelUnknownError, func(t *testing.T) {
		if !slices.Contains(examples.([]any), any(contract.LabelUnknownError)) || !strings.Contains(comment, contract.LabelUnknownError) {
			t.Errorf("label %q not documented", contract.LabelUnknownError)
		}
	})
}

func TestAsyncAPIDocument(t *testing.T) {
	doc := decodeDoc(t, asyncAPIJSON)
	if v := doc["asyncapi"]; v != "3.0.0" {
		t.Fatalf("asyncapi = %v, want 3.0.0", v)
	}
	t.Run("channels", func(t *testing.T) {
		tests := []struct {
			name, channel, address string
			params                 []string
			messages               []string
		}{
			{"outbound", "outbound", "fed.out.{component}.{rpc}.{targetDomain}", []string{"component", "rpc", "targetDomain"}, []string{"request", "requestStructured"}},
			{"inbound", "inbound", "fed.in.{component}.{rpc}.{originDomain}", []string{"component", "rpc", "originDomain"}, []string{"request"}},
			{"outbound reply", "outboundReply", "", nil, []string{"response", "error", "responseStructured", "errorStructured", "responseObject", "responseObjectStructured"}},
			{"inbound reply", "inboundReply", "", nil, []string{"response", "error", "responseObject"}},
			{"notifications", "notify", "fed.notify.{component}.{rpc}.{targetDomain}", []string{"component", "rpc", "targetDomain"}, []string{"notification"}},
			{"inbound notifications", "inbox", "fed.inbox.{component}.{rpc}.{originDomain}", []string{"component", "rpc", "originDomain"}, []string{"notification"}},
			{"dead letters", "deadLetters", "fed.dead.{component}.{rpc}.{targetDomain}", []string{"component", "rpc", "targetDomain"}, []string{"deadLetter"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ch, ok := lookup(doc, "/channels/"+tt.channel)
				if !ok {
					t.Fatalf("no channel %s", tt.channel)
				}
				c := ch.(map[string]any)
				if tt.address == "" {
					if c["address"] != nil {
						t.Errorf("address = %v, want null (the NATS reply inbox)", c["address"])
					}
				} else if c["address"] != tt.address {
					t.Errorf("address = %v, want %s", c["address"], tt.address)
				}
				for _, p := range tt.params {
					if _, ok := lookup(c, "/parameters/"+p); !ok {
						t.Errorf("parameter %s missing", p)
					}
				}
				for _, m := range tt.messages {
					if _, ok := lookup(c, "/messages/"+m); !ok {
						t.Errorf("message %s missing", m)
					}
				}
			})
		}
	})
	t.Run("operations", func(t *testing.T) {
		tests := []struct {
			name, op, action, channel, replyChannel, queue string
		}{
			{"component sends", "callFederator", "send", "outbound", "outboundReply", ""},
			{"federator receives", "serveFederator", "receive", "outbound", "outboundReply", "federator"},
			{"ingress sends", "publishInbound", "send", "inbound", "inboundReply", ""},
			{"component receives", "serveInbound", "receive", "inbound", "inboundReply", ""},
			{"component notifies", "publishNotification", "send", "notify", "", ""},
			{"federator delivers", "deliverNotifications", "receive", "notify", "", ""},
			{"ingress stores", "storeInbound", "send", "inbox", "", ""},
			{"component consumes", "consumeInbound", "receive", "inbox", "", ""},
			{"federator sets aside", "setAside", "send", "deadLetters", "", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				o, ok := lookup(doc, "/operations/"+tt.op)
				if !ok {
					t.Fatalf("no operation %s", tt.op)
				}
				op := o.(map[string]any)
				if op["action"] != tt.action {
					t.Errorf("action = %v, want %s", op["action"], tt.action)
				}
				if ref, _ := lookup(op, "/channel/$ref"); ref != "#/channels/"+tt.channel {
					t.Errorf("channel = %v, want #/channels/%s", ref, tt.channel)
				}
				// Operation messages must be messages of the operation's channel.
				for _, m := range op["messages"].([]any) {
					ref := m.(map[string]any)["$ref"].(string)
					if !strings.HasPrefix(ref, "#/channels/"+tt.channel+"/messages/") {
						t.Errorf("message %s is not a message of channel %s", ref, tt.channel)
					}
				}
				if tt.replyChannel == "" {
					if op["reply"] != nil {
						t.Errorf("reply = %v, want none (a JetStream publish)", op["reply"])
					}
					return
				}
				reply := resolveRef(t, doc, op["reply"])
				if ref, _ := lookup(reply, "/channel/$ref"); ref != "#/channels/"+tt.replyChannel {
					t.Errorf("reply channel = %v, want #/channels/%s", ref, tt.replyChannel)
				}
				for _, m := range reply.(map[string]any)["messages"].([]any) {
					ref := m.(map[string]any)["$ref"].(string)
					if !strings.HasPrefix(ref, "#/channels/"+tt.replyChannel+"/messages/") {
						t.Errorf("reply message %s is not a message of channel %s", ref, tt.replyChannel)
					}
				}
				queue, _ := lookup(op, "/bindings/nats/queue")
				if tt.queue != "" && queue != tt.queue {
					t.Errorf("nats queue = %v, want %s", queue, tt.queue)
				}
			})
		}
	})
	t.Run("every reference resolves", func(t *testing.T) {
		var walk func(ptr string, v any)
		n := 0
		walk = func(ptr string, v any) {
			switch x := v.(type) {
			case map[string]any:
				if ref, ok := x["$ref"].(string); ok {
					n++
					switch {
					case strings.HasPrefix(ref, "#"):
						if _, ok := lookup(doc, strings.TrimPrefix(ref, "#")); !ok {
							t.Errorf("%s: $ref %s does not resolve", ptr, ref)
						}
					case ref != "error.schema.json":
						t.Errorf("%s: unexpected external $ref %s", ptr, ref)
					}
				}
				for k, e := range x {
					walk(ptr+"/"+k, e)
				}
			case []any:
				for i, e := range x {
					walk(fmt.Sprintf("%s/%d", ptr, i), e)
				}
			}
		}
		walk("", doc)
		if n == 0 {
			t.Error("no references found")
		}
	})
}

// resolveRef returns v, or the object its local $ref points to.
func resolveRef(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("not an object: %v", v)
	}
	if ref, ok := obj["$ref"].(string); ok {
		r, ok := lookup(doc, strings.TrimPrefix(ref, "#"))
		if !ok {
			t.Fatalf("$ref %s does not resolve", ref)
		}
		return r
	}
	return v
}

func TestSchemasCompile(t *testing.T) {
	doc := decodeDoc(t, asyncAPIJSON)
	comps, _ := lookup(doc, "/components/schemas")
	var names []string
	for name := range comps.(map[string]any) {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, want := range []string{"RequestHeaders", "InboundRequestHeaders", "ResponseHeaders", "ErrorHeaders", "StructuredHeaders", "StructuredEvent", "StructuredRequest", "StructuredResponse", "StructuredError", "ErrorBody", "ComponentToken", "RPCToken", "DomainToken",
		"ObjectBucket", "ObjectName", "ObjectSize", "ObjectResponseHeaders", "StructuredObjectHeaders", "StructuredObjectResponse",
		"NotificationId", "NotificationHeaders", "InboundNotificationHeaders", "DeadLetterHeaders"} {
		if !slices.Contains(names, want) {
			t.Errorf("components.schemas.%s missing", want)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // compiles concurrently: exercises the registry's lock
			if _, err := AsyncAPISchema(name); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("ErrorSchema", func(t *testing.T) {
		t.Parallel()
		s, err := ErrorSchema()
		if err != nil {
			t.Fatal(err)
		}
		s2, _ := ErrorSchema()
		if s != s2 {
			t.Error("ErrorSchema is not cached")
		}
	})
	t.Run("unknown name", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{"NoSuchSchema", "", "../channels", "ErrorBody/properties"} {
			if _, err := AsyncAPISchema(name); err == nil {
				t.Errorf("AsyncAPISchema(%q): want an error", name)
			}
			if err := ValidateHeaders(name, nil); err == nil {
				t.Errorf("ValidateHeaders(%q): want an error", name)
			}
		}
	})
}

// TestDocumentExamples validates the examples written in the documents
// against the schemas next to them.
func TestDocumentExamples(t *testing.T) {
	doc := decodeDoc(t, asyncAPIJSON)
	msgs, _ := lookup(doc, "/components/messages")
	n := 0
	for name, m := range msgs.(map[string]any) {
		examples, _ := m.(map[string]any)["examples"].([]any)
		for i, ex := range examples {
			n++
			t.Run(fmt.Sprintf("message %s example %d", name, i), func(t *testing.T) {
				base := AsyncAPIURL + "#/components/messages/" + name
				exj, _ := json.Marshal(ex)
				var e struct {
					Headers json.RawMessage `json:"headers"`
					Payload json.RawMessage `json:"payload"`
				}
				if err := json.Unmarshal(exj, &e); err != nil {
					t.Fatal(err)
				}
				if err := validateJSON(compileAt(t, base+"/headers"), e.Headers); err != nil {
					t.Errorf("headers: %v", err)
				}
				if _, ok := lookup(m, "/payload"); ok && e.Payload != nil {
					if err := validateJSON(compileAt(t, base+"/payload"), e.Payload); err != nil {
						t.Errorf("payload: %v", err)
					}
				}
			})
		}
	}
	if n == 0 {
		t.Error("no message examples")
	}
	errDoc := decodeDoc(t, errorSchemaJSON)
	es, err := ErrorSchema()
	if err != nil {
		t.Fatal(err)
	}
	for i, ex := range errDoc["examples"].([]any) {
		t.Run(fmt.Sprintf("error example %d", i), func(t *testing.T) {
			b, _ := json.Marshal(ex)
			if err := validateJSON(es, b); err != nil {
				t.Error(err)
			}
		})
	}
	labels, _ := lookup(errDoc, "/properties/label/examples")
	for _, l := range labels.([]any) {
		t.Run("label example "+l.(string), func(t *testing.T) {
			b, _ := json.Marshal(map[string]any{"code": 500, "label": l, "message": ""})
			if err := validateJSON(es, b); err != nil {
				t.Error(err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// error bodies made by the bus package

func TestErrorBodies(t *testing.T) {
	notFound := []byte(`{"code":404,"label":"not-found","message":"user not found"}`)
	html := []byte("<html><body>502 Bad Gateway</body></html>")
	long := bytes.Repeat([]byte("é"), 300) // cut at 200 bytes, inside a rune
	tests := []struct {
		name string
		err  *contract.Error
	}{
		{"Errorf timeout", contract.Errorf(contract.LabelTimeout, "x")},
		{"Errorf invalid-request", contract.Errorf(contract.LabelInvalidRequest, "not a CloudEvent: header %s is missing", contract.HeaderID)},
		{"Errorf unknown label", contract.Errorf("some-new-label", "status 500")},
		{"Errorf empty message", contract.Errorf(contract.LabelPayloadTooLarge, "")},
		{"sentinel", contract.ErrComponentUnavailable},
		{"RemoteError of a contract error", contract.RemoteError(contract.ParseError(404, notFound))},
		{"RemoteError of a timeout", contract.RemoteError(contract.Errorf(contract.LabelTimeout, "remote timeout"))},
		{"RemoteError of html", contract.RemoteError(contract.ParseError(502, html))},
		{"ParseError html", contract.ParseError(502, []byte("<html>"))},
		{"ParseError empty body", contract.ParseError(503, nil)},
		{"ParseError long body", contract.ParseError(500, long)},
		{"ParseError nested inner", contract.ParseError(533, contract.RemoteError(contract.ParseError(404, notFound)).JSON())},
		{"ParseError extra fields dropped", contract.ParseError(404, []byte(`{"code":404,"label":"not-found","message":"m","extra":true}`))},
		{"RemoteError of RemoteError", contract.RemoteError(contract.RemoteError(contract.ParseError(404, notFound)))},
		{"AsError plain error", contract.AsError(errors.New("boom"))},
		{"AsError deadline", contract.AsError(context.DeadlineExceeded)},
		{"AsError wrapped", contract.AsError(fmt.Errorf("wrapped: %w", contract.Errorf(contract.LabelInvalidDomain, "no SRV")))},
		{"NATSError no responders", bus.NATSError("fed.out.brig.x.b.example.com", nats.ErrNoResponders)},
		{"NATSError timeout", bus.NATSError("fed.out.brig.x.b.example.com", nats.ErrTimeout)},
		{"domain token error", domainErr("a..b")},
	}
	es, err := ErrorSchema()
	if err != nil {
		t.Fatal(err)
	}
	body := schema(t, "ErrorBody")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := tt.err.JSON()
			if err := validateJSON(es, b); err != nil {
				t.Errorf("error.schema.json: %v\nbody: %s", err, b)
			}
			if err := validateJSON(body, b); err != nil {
				t.Errorf("ErrorBody: %v\nbody: %s", err, b)
			}
		})
	}
}

func domainErr(d string) *contract.Error {
	_, err := contract.NormalizeDomain(d)
	return contract.AsError(err)
}

// TestErrorBodiesKnownIssues: remote bodies that contract.ParseError takes for
// contract errors although they break the error schema, so the error reply
// that wraps them breaks it too. The contract says a remote body that is not
// a contract error becomes an unknown-federation-error. Skipped until
// contract.ParseError checks the body (reported, not fixed here: bus/ is another
// package's).
func TestNonContractRemoteBodiesAreWrapped(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"code outside 100-599", `{"code":42,"label":"not-found","message":"x"}`},
		{"label outside [a-z0-9-]", `{"code":404,"label":"Not Found","message":"x"}`},
		{"inner without label", `{"code":404,"label":"not-found","message":"x","inner":{"code":1}}`},
	}
	es, err := ErrorSchema()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateJSON(es, []byte(tt.body)); err == nil {
				t.Fatalf("the remote body itself should break the schema: %s", tt.body)
			}
			b := contract.RemoteError(contract.ParseError(502, []byte(tt.body))).JSON()
			if err := validateJSON(es, b); err != nil {
				t.Fatalf("a non-contract remote body must become unknown-federation-error, got %s: %v", b, err)
			}
		})
	}
}

func TestErrorBodiesInvalid(t *testing.T) {
	tests := []struct {
		name, body string
	}{
		{"extra field", `{"code":500,"label":"server-error","message":"m","extra":1}`},
		{"extra field in inner", `{"code":533,"label":"federation-remote-error","message":"m","inner":{"code":404,"label":"not-found","message":"x","extra":1}}`},
		{"missing code", `{"label":"server-error","message":"m"}`},
		{"missing label", `{"code":500,"message":"m"}`},
		{"missing message", `{"code":500,"label":"server-error"}`},
		{"inner missing message", `{"code":533,"label":"federation-remote-error","message":"m","inner":{"code":404,"label":"not-found"}}`},
		{"code as string", `{"code":"500","label":"server-error","message":"m"}`},
		{"code not an integer", `{"code":500.5,"label":"server-error","message":"m"}`},
		{"code too small", `{"code":99,"label":"server-error","message":"m"}`},
		{"code too large", `{"code":600,"label":"server-error","message":"m"}`},
		{"label upper case", `{"code":500,"label":"Server-Error","message":"m"}`},
		{"label with space", `{"code":500,"label":"server error","message":"m"}`},
		{"label empty", `{"code":500,"label":"","message":"m"}`},
		{"message null", `{"code":500,"label":"server-error","message":null}`},
		{"inner not an object", `{"code":533,"label":"federation-remote-error","message":"m","inner":"x"}`},
		{"not an object", `["code",500]`},
	}
	es, err := ErrorSchema()
	if err != nil {
		t.Fatal(err)
	}
	body := schema(t, "ErrorBody")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectValid(t, validateJSON(es, []byte(tt.body)), false)
			expectValid(t, validateJSON(body, []byte(tt.body)), false)
		})
	}
}

// ---------------------------------------------------------------------------
// messages made by the bus package

func TestEventMessages(t *testing.T) {
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	out, err := subjects.Out("brig", "get-user-by-handle", "b.example.com")
	if err != nil {
		t.Fatal(err)
	}
	in, err := subjects.In("brig", "get-user-by-handle", "a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	const inbox = "_INBOX.abc"
	body := []byte(`{"handle":"alice"}`)
	// as bus.Client builds it
	request := func() bus.Event {
		return bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, TraceParent: traceParent, TimeoutMs: 9998, Data: body}
	}
	// as the ingress builds it (contract, section 3)
	inbound := func() bus.Event {
		return bus.Event{ID: "req-7f3a", Source: "//a.example.com/brig", Type: contract.TypeRequest, OriginDomain: "a.example.com", TimeoutMs: 9950, Data: body}
	}
	structured := func(e bus.Event) bus.Event { e.Structured = true; return e }
	remote := contract.RemoteError(contract.ParseError(502, []byte("<html>")))
	ref := bus.ObjectRef{Bucket: contract.DefaultObjectBucket, Name: bus.NewID(), Size: 52428800}

	tests := []struct {
		name      string
		msg       *nats.Msg
		headers   string // schema of the headers
		payload   string // schema of the body, "" for none
		wantValid bool
		// decodes tells whether bus.Decode accepts the message (nil: not checked)
		decodes *bool
	}{
		{"request binary", request().Message(out), "RequestHeaders", "", true, ptr(true)},
		{"request binary minimal", bus.Event{ID: "1", Source: "/galley", Type: contract.TypeRequest}.Message(out), "RequestHeaders", "", true, ptr(true)},
		{"request binary with content type", func() *nats.Msg {
			e := request()
			e.DataContentType = "application/json; charset=utf-8"
			return e.Message(out)
		}(), "RequestHeaders", "", true, ptr(true)},
		{"request structured", structured(request()).Message(out), "StructuredHeaders", "StructuredRequest", true, ptr(true)},
		{"request structured is a StructuredEvent", structured(request()).Message(out), "StructuredHeaders", "StructuredEvent", true, nil},
		{"request structured non-JSON data", func() *nats.Msg {
			e := structured(request())
			e.DataContentType, e.Data = "application/octet-stream", []byte{0, 1, 2}
			return e.Message(out)
		}(), "StructuredHeaders", "StructuredRequest", true, ptr(true)},
		{"request structured no data", structured(bus.Event{ID: "1", Source: "/brig", Type: contract.TypeRequest}).Message(out), "StructuredHeaders", "StructuredRequest", true, ptr(true)},
		{"inbound request", inbound().Message(in), "InboundRequestHeaders", "", true, ptr(true)},
		{"inbound request with traceparent", func() *nats.Msg {
			e := inbound()
			e.TraceParent = traceParent
			return e.Message(in)
		}(), "InboundRequestHeaders", "", true, ptr(true)},
		{"response binary", bus.Reply(request(), "/brig", body).Message(inbox), "ResponseHeaders", "", true, ptr(true)},
		{"response binary empty body", bus.Reply(request(), "/brig", nil).Message(inbox), "ResponseHeaders", "", true, ptr(true)},
		{"response structured", bus.Reply(structured(request()), "/brig", body).Message(inbox), "StructuredHeaders", "StructuredResponse", true, ptr(true)},
		{"error binary", bus.ErrorReply(false, "/federator", remote).Message(inbox), "ErrorHeaders", "ErrorBody", true, ptr(true)},
		{"error binary timeout", bus.ErrorReply(false, "/federator", contract.Errorf(contract.LabelTimeout, "x")).Message(inbox), "ErrorHeaders", "ErrorBody", true, ptr(true)},
		{"error structured", bus.ErrorReply(true, "/federator", remote).Message(inbox), "StructuredHeaders", "StructuredError", true, ptr(true)},
		{"error structured invalid-request", bus.ErrorReply(true, "/brig", contract.Errorf(contract.LabelInvalidRequest, "x")).Message(inbox), "StructuredHeaders", "StructuredError", true, ptr(true)},
		{"object response binary", bus.ObjectReply(request(), "/federator", "application/octet-stream", ref).Message(inbox), "ObjectResponseHeaders", "", true, ptr(true)},
		{"object response binary is a response", bus.ObjectReply(request(), "/federator", "image/png", ref).Message(inbox), "ResponseHeaders", "", true, ptr(true)},
		{"object response binary, empty object", bus.ObjectReply(request(), "/federator", "", bus.ObjectRef{Bucket: "b", Name: "n"}).Message(inbox), "ObjectResponseHeaders", "", true, ptr(true)},
		{"object response structured", bus.ObjectReply(structured(request()), "/federator", "application/octet-stream", ref).Message(inbox), "StructuredObjectHeaders", "StructuredObjectResponse", true, ptr(true)},
		{"object response structured is a response", bus.ObjectReply(structured(request()), "/federator", "application/octet-stream", ref).Message(inbox), "StructuredHeaders", "StructuredResponse", true, ptr(true)},

		// negative cases
		{"request missing ce-id", withoutHeader(request().Message(out), contract.HeaderID), "RequestHeaders", "", false, ptr(false)},
		{"request empty ce-id", withHeader(request().Message(out), contract.HeaderID, ""), "RequestHeaders", "", false, ptr(false)},
		{"request missing ce-source", withoutHeader(request().Message(out), contract.HeaderSource), "RequestHeaders", "", false, ptr(false)},
		{"request missing ce-type", withoutHeader(request().Message(out), contract.HeaderType), "RequestHeaders", "", false, ptr(false)},
		{"request missing ce-specversion", withoutHeader(request().Message(out), contract.HeaderSpecVersion), "RequestHeaders", "", false, ptr(false)},
		{"request specversion 0.3", withHeader(request().Message(out), contract.HeaderSpecVersion, "0.3"), "RequestHeaders", "", false, ptr(false)},
		{"request timeoutms 0", withHeader(request().Message(out), contract.HeaderTimeoutMs, "0"), "RequestHeaders", "", false, ptr(false)},
		{"request timeoutms negative", withHeader(request().Message(out), contract.HeaderTimeoutMs, "-5"), "RequestHeaders", "", false, ptr(false)},
		{"request timeoutms not a number", withHeader(request().Message(out), contract.HeaderTimeoutMs, "10s"), "RequestHeaders", "", false, ptr(false)},
		{"request wrong ce-type", withHeader(request().Message(out), contract.HeaderType, contract.TypeResponse), "RequestHeaders", "", false, nil},
		{"request bad traceparent", withHeader(request().Message(out), contract.HeaderTraceParent, "not-a-traceparent"), "RequestHeaders", "", false, nil},
		{"outbound request with ce-origindomain", withHeader(request().Message(out), contract.HeaderOriginDomain, "a.example.com"), "RequestHeaders", "", false, nil},
		{"binary request with structured content-type", withHeader(request().Message(out), contract.HeaderContentType, contract.ContentTypeCEJSON), "RequestHeaders", "", false, ptr(false)},
		{"structured request as binary", structured(request()).Message(out), "RequestHeaders", "", false, nil},
		{"binary request as structured", request().Message(out), "StructuredHeaders", "", false, nil},
		{"structured request with origindomain", structured(inbound()).Message(in), "StructuredHeaders", "StructuredRequest", false, nil},
		{"inbound request without ce-origindomain", withoutHeader(inbound().Message(in), contract.HeaderOriginDomain), "InboundRequestHeaders", "", false, nil},
		{"inbound request from client", request().Message(in), "InboundRequestHeaders", "", false, nil},
		{"inbound request bad origin", withHeader(inbound().Message(in), contract.HeaderOriginDomain, "localhost"), "InboundRequestHeaders", "", false, nil},
		{"inbound request ce-id with space", withHeader(inbound().Message(in), contract.HeaderID, "a b"), "InboundRequestHeaders", "", false, nil},
		{"inbound request bad ce-source", withHeader(inbound().Message(in), contract.HeaderSource, "/brig"), "InboundRequestHeaders", "", false, nil},
		{"response as error", bus.Reply(request(), "/brig", body).Message(inbox), "ErrorHeaders", "", false, nil},
		{"error as response", bus.ErrorReply(false, "/brig", remote).Message(inbox), "ResponseHeaders", "", false, nil},
		{"error binary with a non-error body", bus.Event{ID: "1", Source: "/brig", Type: contract.TypeError, Data: []byte(`{"code":500,"label":"x","message":"m","extra":1}`)}.Message(inbox), "ErrorHeaders", "ErrorBody", false, nil},
		{"error structured with a non-error body", bus.Event{ID: "1", Source: "/brig", Type: contract.TypeError, Data: []byte(`{"code":500,"label":"x","message":"m","extra":1}`), Structured: true}.Message(inbox), "StructuredHeaders", "StructuredError", false, nil},
		{"error structured without data", bus.Event{ID: "1", Source: "/brig", Type: contract.TypeError, Structured: true}.Message(inbox), "StructuredHeaders", "StructuredError", false, nil},
		{"response structured as error", bus.Reply(structured(request()), "/brig", body).Message(inbox), "StructuredHeaders", "StructuredError", false, nil},
		{"inline response as object response", bus.Reply(request(), "/brig", body).Message(inbox), "ObjectResponseHeaders", "", false, nil},
		{"object response without size", withoutHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectSize), "ResponseHeaders", "", false, ptr(false)},
		{"object response without bucket", withoutHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectBucket), "ResponseHeaders", "", false, ptr(false)},
		{"object response size negative", withHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectSize, "-1"), "ObjectResponseHeaders", "", false, ptr(false)},
		{"object response size in MiB", withHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectSize, "50MiB"), "ObjectResponseHeaders", "", false, ptr(false)},
		{"object response bucket with a dot", withHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectBucket, "a.b"), "ObjectResponseHeaders", "", false, ptr(false)},
		{"object response name with a space", withHeader(bus.ObjectReply(request(), "/federator", "", ref).Message(inbox), contract.HeaderObjectName, "a b"), "ObjectResponseHeaders", "", false, ptr(false)},
		{"inline structured response as object response", bus.Reply(structured(request()), "/brig", body).Message(inbox), "StructuredHeaders", "StructuredObjectResponse", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectValid(t, validateMessage(t, tt.msg, tt.headers, tt.payload), tt.wantValid)
			if tt.decodes != nil {
				_, err := bus.Decode(tt.msg)
				if (err == nil) != *tt.decodes {
					t.Errorf("bus.Decode: err = %v, want success %v", err, *tt.decodes)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestStructuredRawEvents validates hand-written structured events: what
// other CloudEvents producers may send.
func TestStructuredRawEvents(t *testing.T) {
	tests := []struct {
		name, schema, body string
		wantValid          bool
	}{
		{"request with JSON data", "StructuredRequest", `{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","datacontenttype":"application/json","data":{"a":1}}`, true},
		{"request with numeric timeoutms", "StructuredRequest", `{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","timeoutms":5000,"data":{"a":1}}`, true},
		{"error with JSON data", "StructuredError", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.error","data":{"code":504,"label":"federation-timeout","message":"m"}}`, true},
		{"request with data and data_base64", "StructuredRequest", `{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","data":{},"data_base64":"e30="}`, false},
		{"request with timeoutms 0", "StructuredRequest", `{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","timeoutms":0}`, false},
		{"request with bad attribute name", "StructuredRequest", `{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","Origin-Domain":"x"}`, false},
		{"request without id", "StructuredRequest", `{"specversion":"1.0","source":"/brig","type":"fedbus.request"}`, false},
		{"error with invalid data", "StructuredError", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.error","data":{"code":504}}`, false},
		{"error with invalid data_base64", "StructuredError", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.error","data_base64":"eyJjb2RlIjo1MDR9"}`, false},
		{"error with data_base64 not base64", "StructuredError", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.error","data_base64":"!!"}`, false},
		{"error with text content type", "StructuredError", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.error","datacontenttype":"text/plain","data":{"code":504,"label":"federation-timeout","message":"m"}}`, false},
		{"object response, size a number", "StructuredObjectResponse", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.response","fedbusobjectbucket":"b","fedbusobjectname":"n","fedbusobjectsize":1024}`, true},
		{"object response with data", "StructuredObjectResponse", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.response","fedbusobjectbucket":"b","fedbusobjectname":"n","fedbusobjectsize":"1","data":{}}`, false},
		{"object response without name", "StructuredResponse", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.response","fedbusobjectbucket":"b","fedbusobjectsize":"1"}`, false},
		{"object response size a fraction", "StructuredObjectResponse", `{"specversion":"1.0","id":"1","source":"/federator","type":"fedbus.response","fedbusobjectbucket":"b","fedbusobjectname":"n","fedbusobjectsize":1.5}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectValid(t, validateJSON(schema(t, tt.schema), []byte(tt.body)), tt.wantValid)
		})
	}
}

// ---------------------------------------------------------------------------
// subjects and tokens

// addressRegexp turns a channel address of the AsyncAPI document into a
// regular expression, each {parameter} a named group with the pattern of the
// parameter's schema; it also returns the schema name of each parameter.
func addressRegexp(t *testing.T, doc map[string]any, channel string) (*regexp.Regexp, map[string]string) {
	t.Helper()
	ch, ok := lookup(doc, "/channels/"+channel)
	if !ok {
		t.Fatalf("no channel %s", channel)
	}
	address := ch.(map[string]any)["address"].(string)
	params := map[string]string{}
	var re strings.Builder
	re.WriteString("^")
	rest := address
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		j := strings.IndexByte(rest, '}')
		re.WriteString(regexp.QuoteMeta(rest[:i]))
		name := rest[i+1 : j]
		rest = rest[j+1:]
		p, ok := lookup(ch, "/parameters/"+name)
		if !ok {
			t.Fatalf("channel %s: no parameter %s", channel, name)
		}
		p = resolveRef(t, doc, p)
		ref, _ := lookup(p, "/x-fedbus-schema/$ref")
		schemaName := strings.TrimPrefix(ref.(string), "#/components/schemas/")
		pattern, ok := lookup(doc, "/components/schemas/"+schemaName+"/pattern")
		if !ok {
			t.Fatalf("schema %s has no pattern", schemaName)
		}
		params[name] = schemaName
		fmt.Fprintf(&re, "(?P<%s>%s)", name, strings.TrimSuffix(strings.TrimPrefix(pattern.(string), "^"), "$"))
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()), params
}

func TestSubjectsMatchChannels(t *testing.T) {
	doc := decodeDoc(t, asyncAPIJSON)
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	outRe, outParams := addressRegexp(t, doc, "outbound")
	inRe, inParams := addressRegexp(t, doc, "inbound")
	notifyRe, notifyParams := addressRegexp(t, doc, "notify")
	inboxRe, inboxParams := addressRegexp(t, doc, "inbox")
	deadRe, deadParams := addressRegexp(t, doc, "deadLetters")
	label63 := strings.Repeat("a", 63)
	long := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 characters
	tests := []struct {
		name                   string
		component, rpc, domain string
		wantDomain             string // canonical form
	}{
		{"simple", "brig", "get-user-by-handle", "b.example.com", "b.example.com"},
		{"rpc with underscore and capitals", "galley", "on_Conversation-Updated", "example.org", "example.org"},
		{"upper-case domain", "cargohold", "getAsset", "B.Example.COM", "b.example.com"},
		{"IDNA domain", "brig", "x", "bücher.example", "xn--bcher-kva.example"},
		{"longest tokens", strings.Repeat("c", 63), strings.Repeat("R", 128), long, long},
		{"numeric labels", "brig", "1", "1.2", "1.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				dir, param string
				build      func(string, string, string) (string, error)
				re         *regexp.Regexp
				params     map[string]string
			}{
				{"out", "targetDomain", subjects.Out, outRe, outParams},
				{"in", "originDomain", subjects.In, inRe, inParams},
				{"notify", "targetDomain", subjects.Notify, notifyRe, notifyParams},
				{"inbox", "originDomain", subjects.Inbox, inboxRe, inboxParams},
				{"dead", "targetDomain", subjects.Dead, deadRe, deadParams},
			} {
				subject, err := c.build(tt.component, tt.rpc, tt.domain)
				if err != nil {
					t.Fatalf("%s: %v", c.dir, err)
				}
				m := c.re.FindStringSubmatch(subject)
				if m == nil {
					t.Fatalf("%s: subject %q does not match %s", c.dir, subject, c.re)
				}
				want := map[string]string{"component": tt.component, "rpc": tt.rpc, c.param: tt.wantDomain}
				for name, schemaName := range c.params {
					tok := m[c.re.SubexpIndex(name)]
					if tok != want[name] {
						t.Errorf("%s: parameter %s = %q, want %q", c.dir, name, tok, want[name])
					}
					if err := schema(t, schemaName).Validate(tok); err != nil {
						t.Errorf("%s: parameter %s %q vs %s: %v", c.dir, name, tok, schemaName, err)
					}
				}
				route, err := map[string]func(string) (contract.Route, error){"out": subjects.ParseOut, "in": subjects.ParseIn,
					"notify": subjects.ParseNotify, "inbox": subjects.ParseInbox, "dead": subjects.ParseDead}[c.dir](subject)
				if err != nil || route.Domain != tt.wantDomain {
					t.Errorf("%s: parse %q = %+v, %v", c.dir, subject, route, err)
				}
			}
		})
	}
}

// TestTokenRulesAgree checks that the token schemas accept exactly what the
// bus package accepts.
func TestTokenRulesAgree(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	domain253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
	component, rpc := contract.ValidComponent, contract.ValidRPC
	domain := func(s string) bool { _, err := contract.NormalizeDomain(s); return err == nil }
	type tokenCase struct {
		name, schema, tok string
		bus               func(string) bool
	}
	var tests []tokenCase
	for _, tok := range []string{"brig", "a", "my-component-2", strings.Repeat("c", 63), "", strings.Repeat("c", 64), "Brig", "br ig", "br.ig", "*", ">", "brig_x", "bríg"} {
		tests = append(tests, tokenCase{fmt.Sprintf("component %q", tok), "ComponentToken", tok, component})
	}
	for _, tok := range []string{"get-user", "A_b-9", strings.Repeat("r", 128), "", strings.Repeat("r", 129), "a.b", "*", ">", "a b", "a/b", "ä"} {
		tests = append(tests, tokenCase{fmt.Sprintf("rpc %q", tok), "RPCToken", tok, rpc})
	}
	// canonical (lower-case ASCII) domains only: bus normalises the others
	for _, tok := range []string{"b.example.com", "a.b", "xn--bcher-kva.example", domain253, "-.-", "", "localhost", "a..b", ".a.b", "a.b.", domain253 + "c", label63 + "a.com", "a.*", "a.>", "a b.com", "a_b.com"} {
		tests = append(tests, tokenCase{fmt.Sprintf("domain %.40q", tok), "DomainToken", tok, domain})
	}
	for _, tok := range []string{"fedbus-objects", "A_b-9", "", "a.b", "a b", "KV_x", "*", ">", "é"} {
		tests = append(tests, tokenCase{fmt.Sprintf("bucket %q", tok), "ObjectBucket", tok, contract.ValidBucket})
	}
	for _, tok := range []string{"Yx2mTtZJd8ovUbwHDzxi3D", "a/b.c~!", strings.Repeat("n", 255), "", strings.Repeat("n", 256), "a b", "a\tb", "é", "\x7f"} {
		tests = append(tests, tokenCase{fmt.Sprintf("object name %.40q", tok), "ObjectName", tok, contract.ValidObjectName})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			schemaOK := schema(t, tt.schema).Validate(tt.tok) == nil
			if busOK := tt.bus(tt.tok); schemaOK != busOK {
				t.Errorf("%s accepts %q: %v, bus: %v", tt.schema, tt.tok, schemaOK, busOK)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// end to end, over an in-process NATS server

func startNATS(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connect(t *testing.T, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// capture subscribes a plain (non-queue) subscriber that records the
// messages on subject, as the bus code sent them.
func capture(t *testing.T, nc *nats.Conn, subject string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) { ch <- m }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func next(t *testing.T, ch chan *nats.Msg) *nats.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message captured")
		return nil
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestServeEndToEnd publishes requests the way the ingress does to a
// component served by bus.Serve, and validates the request as captured on
// the bus and the component's reply.
func TestServeEndToEnd(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handler := func(ctx context.Context, req *bus.Request) ([]byte, error) {
		switch req.RPC {
		case "get-user":
			return json.Marshal(map[string]string{"handle": "alice", "origin": req.Origin, "id": req.ID})
		case "empty":
			return nil, nil
		case "not-found":
			return nil, &contract.Error{Code: 404, Label: "not-found", Message: "no such user"}
		case "boom":
			return nil, errors.New("boom")
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, contract.Errorf(contract.LabelInvalidEndpoint, "no rpc %s", req.RPC)
	}
	srv, err := bus.Serve(ctx, nc, subjects, "brig", handler, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	spy := connect(t, s)
	captured := capture(t, spy, "fed.in.>")

	const origin = "a.example.com"
	tests := []struct {
		name       string
		rpc        string
		structured bool
		timeoutMs  int64
		mutate     func(*nats.Msg)
		validReq   bool   // the captured request validates
		mismatch   bool   // origin, ce-source and subject disagree
		wantType   string // reply ce-type
		wantLabel  string // for errors
		wantCode   int
	}{
		{name: "response", rpc: "get-user", validReq: true, wantType: contract.TypeResponse},
		{name: "empty response", rpc: "empty", validReq: true, wantType: contract.TypeResponse},
		{name: "handler contract error", rpc: "not-found", validReq: true, wantType: contract.TypeError, wantLabel: "not-found", wantCode: 404},
		{name: "handler plain error", rpc: "boom", validReq: true, wantType: contract.TypeError, wantLabel: contract.LabelServerError, wantCode: 500},
		{name: "handler deadline", rpc: "slow", timeoutMs: 50, validReq: true, wantType: contract.TypeError, wantLabel: contract.LabelTimeout, wantCode: 504},
		{name: "structured response", rpc: "get-user", structured: true, validReq: true, wantType: contract.TypeResponse},
		{name: "structured error", rpc: "not-found", structured: true, validReq: true, wantType: contract.TypeError, wantLabel: "not-found", wantCode: 404},
		{name: "invalid request: no ce-id", rpc: "get-user", mutate: func(m *nats.Msg) { delete(m.Header, contract.HeaderID) },
			validReq: false, wantType: contract.TypeError, wantLabel: contract.LabelInvalidRequest, wantCode: 400},
		{name: "invalid request: structured garbage", rpc: "get-user", structured: true, mutate: func(m *nats.Msg) { m.Data = []byte("{") },
			validReq: false, wantType: contract.TypeError, wantLabel: contract.LabelInvalidRequest, wantCode: 400},
		{name: "origin disagrees with subject", rpc: "get-user", mutate: func(m *nats.Msg) { m.Header[contract.HeaderOriginDomain] = []string{"c.example.com"} },
			validReq: true, mismatch: true, wantType: contract.TypeError, wantLabel: contract.LabelNoOriginDomain, wantCode: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject, err := subjects.In("brig", tt.rpc, origin)
			if err != nil {
				t.Fatal(err)
			}
			// as the ingress publishes it (contract, section 3)
			ev := bus.Event{
				ID: "req-" + tt.rpc, Source: "//" + origin + "/brig", Type: contract.TypeRequest,
				OriginDomain: origin, TraceParent: traceParent, TimeoutMs: tt.timeoutMs,
				Data: []byte(`{"handle":"alice"}`), Structured: tt.structured,
			}
			if ev.TimeoutMs == 0 {
				ev.TimeoutMs = 5000
			}
			msg := ev.Message(subject)
			if tt.mutate != nil {
				tt.mutate(msg)
			}
			reply, err := nc.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}

			req := next(t, captured)
			if req.Subject != subject {
				t.Fatalf("captured %s, want %s", req.Subject, subject)
			}
			var reqErr error
			if tt.structured {
				// the ingress publishes binary mode; a structured request
				// on fed.in is a valid CloudEvent with origindomain
				reqErr = validateMessage(t, req, "StructuredHeaders", "StructuredEvent")
			} else {
				reqErr = validateMessage(t, req, "InboundRequestHeaders", "")
				if reqErr == nil {
					err := inboundConsistency(subjects, req)
					if (err != nil) != tt.mismatch {
						t.Errorf("consistency of origin, ce-source and subject: %v, want mismatch %v", err, tt.mismatch)
					}
				}
			}
			expectValid(t, reqErr, tt.validReq)

			checkReply(t, reply, tt.structured, tt.wantType, tt.wantLabel, tt.wantCode)
			if tt.wantType == contract.TypeResponse && tt.rpc == "get-user" {
				got, _ := bus.Decode(reply)
				var b map[string]string
				if err := json.Unmarshal(got.Data, &b); err != nil || b["origin"] != origin || b["id"] != ev.ID {
					t.Errorf("response body %s: %v", got.Data, err)
				}
			}
		})
	}
}

// inboundConsistency checks what JSON Schema cannot: ce-origindomain, the
// domain of ce-source and the subject's domain are the same.
func inboundConsistency(subjects contract.Subjects, m *nats.Msg) error {
	route, err := subjects.ParseIn(m.Subject)
	if err != nil {
		return err
	}
	if got := m.Header.Get(contract.HeaderOriginDomain); got != route.Domain {
		return fmt.Errorf("ce-origindomain %q, subject domain %q", got, route.Domain)
	}
	if got, want := m.Header.Get(contract.HeaderSource), "//"+route.Domain+"/"+route.Component; got != want {
		return fmt.Errorf("ce-source %q, want %q", got, want)
	}
	return nil
}

// checkReply validates a reply message against the schemas of its kind and
// checks its type and error label.
func checkReply(t *testing.T, reply *nats.Msg, structured bool, wantType, wantLabel string, wantCode int) {
	t.Helper()
	var headers, payload string
	switch {
	case !structured && wantType == contract.TypeResponse:
		headers = "ResponseHeaders"
	case !structured:
		headers, payload = "ErrorHeaders", "ErrorBody"
	case wantType == contract.TypeResponse:
		headers, payload = "StructuredHeaders", "StructuredResponse"
	default:
		headers, payload = "StructuredHeaders", "StructuredError"
	}
	if err := validateMessage(t, reply, headers, payload); err != nil {
		t.Errorf("reply: %v\nheaders: %v\nbody: %s", err, reply.Header, reply.Data)
	}
	ev, err := bus.Decode(reply)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if ev.Type != wantType || ev.Structured != structured {
		t.Errorf("reply type %s structured %v, want %s %v", ev.Type, ev.Structured, wantType, structured)
	}
	if wantType != contract.TypeError {
		return
	}
	data := reply.Data
	if structured {
		data = structuredData(t, reply.Data)
	}
	if err := validateJSON(schema(t, "ErrorBody"), data); err != nil {
		t.Errorf("error body: %v", err)
	}
	var e contract.Error
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if e.Label != wantLabel || e.Code != wantCode {
		t.Errorf("error %d %s, want %d %s", e.Code, e.Label, wantCode, wantLabel)
	}
}

// TestClientCall makes calls with bus.Client against a fake federator and
// validates the requests as the federator receives them, the federator's
// replies, and the errors that Call returns.
func TestClientCall(t *testing.T) {
	s := startNATS(t)
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	fedConn := connect(t, s)
	received := make(chan *nats.Msg, 16)
	replies := make(chan *nats.Msg, 16)
	notFound := []byte(`{"code":404,"label":"not-found","message":"user not found"}`)
	_, err = fedConn.QueueSubscribe(subjects.OutAll(), contract.FederatorQueueGroup, func(m *nats.Msg) {
		received <- m
		ev, err := bus.Decode(m)
		var out bus.Event
		switch route, perr := subjects.ParseOut(m.Subject); {
		case err != nil:
			out = bus.ErrorReply(bus.WantsStructured(m), "/federator", contract.AsError(err))
		case perr != nil:
			out = bus.ErrorReply(ev.Structured, "/federator", contract.AsError(perr))
		case route.RPC == "get-user":
			out = bus.Reply(ev, "/federator", []byte(`{"handle":"alice"}`))
		case route.RPC == "remote-error":
			out = bus.ErrorReply(ev.Structured, "/federator", contract.RemoteError(contract.ParseError(404, notFound)))
		case route.RPC == "remote-html":
			out = bus.ErrorReply(ev.Structured, "/federator", contract.RemoteError(contract.ParseError(502, []byte("<html>Bad Gateway</html>"))))
		case route.RPC == "remote-timeout":
			out = bus.ErrorReply(ev.Structured, "/federator", contract.RemoteError(contract.Errorf(contract.LabelTimeout, "remote")))
		default:
			out = bus.ErrorReply(ev.Structured, "/federator", contract.Errorf(contract.LabelDiscoveryFailure, "x"))
		}
		rm := out.Message(m.Reply)
		replies <- rm
		_ = m.RespondMsg(rm)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fedConn.Flush(); err != nil {
		t.Fatal(err)
	}
	doc := decodeDoc(t, asyncAPIJSON)
	outRe, _ := addressRegexp(t, doc, "outbound")

	nc := connect(t, s)
	client := bus.NewClient(nc, subjects, "/brig")
	tests := []struct {
		name      string
		rpc       string
		target    string
		id, trace string        // call options
		deadline  time.Duration // 0: the client's default timeout
		wantBody  string
		wantLabel string
		wantInner string
		published bool
	}{
		{name: "response", rpc: "get-user", target: "b.example.com", id: "my-id-1", trace: traceParent, deadline: 3 * time.Second, wantBody: `{"handle":"alice"}`, published: true},
		{name: "response without options", rpc: "get-user", target: "B.Example.Com", wantBody: `{"handle":"alice"}`, published: true},
		{name: "remote error", rpc: "remote-error", target: "b.example.com", wantLabel: contract.LabelRemoteError, wantInner: "not-found", published: true},
		{name: "remote html", rpc: "remote-html", target: "b.example.com", wantLabel: contract.LabelRemoteError, wantInner: contract.LabelUnknownError, published: true},
		{name: "remote timeout", rpc: "remote-timeout", target: "b.example.com", wantLabel: contract.LabelTimeout, wantInner: contract.LabelTimeout, published: true},
		{name: "federator error", rpc: "other", target: "b.example.com", wantLabel: contract.LabelDiscoveryFailure, published: true},
		{name: "invalid target", rpc: "get-user", target: "b..example.com", wantLabel: contract.LabelDomainParseError},
		{name: "wildcard rpc", rpc: "*", target: "b.example.com", wantLabel: contract.LabelInvalidEndpoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			var opts []bus.CallOption
			if tt.id != "" {
				opts = append(opts, bus.WithID(tt.id))
			}
			if tt.trace != "" {
				opts = append(opts, bus.WithTraceParent(tt.trace))
			}
			body, callErr := client.Call(ctx, tt.target, "brig", tt.rpc, []byte(`{"handle":"alice"}`), opts...)

			if !tt.published {
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				select {
				case m := <-received:
					t.Fatalf("published %s although the call was refused", m.Subject)
				case <-time.After(50 * time.Millisecond):
				}
			} else {
				req := next(t, received)
				if err := validateMessage(t, req, "RequestHeaders", ""); err != nil {
					t.Errorf("request: %v\nheaders: %v", err, req.Header)
				}
				if !outRe.MatchString(req.Subject) {
					t.Errorf("subject %q does not match %s", req.Subject, outRe)
				}
				if got := req.Header.Get(contract.HeaderSource); got != "/brig" {
					t.Errorf("ce-source %q", got)
				}
				if tt.id != "" && req.Header.Get(contract.HeaderID) != tt.id {
					t.Errorf("ce-id %q, want %q", req.Header.Get(contract.HeaderID), tt.id)
				}
				if req.Header.Get(contract.HeaderTraceParent) != tt.trace {
					t.Errorf("ce-traceparent %q, want %q", req.Header.Get(contract.HeaderTraceParent), tt.trace)
				}
				limit := tt.deadline
				if limit == 0 {
					limit = bus.DefaultTimeout
				}
				var ms int64
				if _, err := fmt.Sscan(req.Header.Get(contract.HeaderTimeoutMs), &ms); err != nil || ms <= 0 || ms > limit.Milliseconds() {
					t.Errorf("ce-timeoutms %q, want 1..%d", req.Header.Get(contract.HeaderTimeoutMs), limit.Milliseconds())
				}
				if string(req.Data) != `{"handle":"alice"}` {
					t.Errorf("body %q", req.Data)
				}
				rep := next(t, replies)
				if tt.wantLabel == "" {
					checkReply(t, rep, false, contract.TypeResponse, "", 0)
				} else {
					checkReply(t, rep, false, contract.TypeError, tt.wantLabel, contract.StatusOf(tt.wantLabel))
				}
			}

			if tt.wantLabel == "" {
				if callErr != nil || string(body) != tt.wantBody {
					t.Fatalf("Call = %q, %v; want %s", body, callErr, tt.wantBody)
				}
				return
			}
			var e *contract.Error
			if !errors.As(callErr, &e) {
				t.Fatalf("Call error %T %v, want *contract.Error", callErr, callErr)
			}
			if e.Label != tt.wantLabel {
				t.Errorf("label %s, want %s", e.Label, tt.wantLabel)
			}
			if tt.wantInner != "" && (e.Inner == nil || e.Inner.Label != tt.wantInner) {
				t.Errorf("inner %+v, want label %s", e.Inner, tt.wantInner)
			}
			if err := validateJSON(schema(t, "ErrorBody"), e.JSON()); err != nil {
				t.Errorf("returned error: %v", err)
			}
		})
	}

	t.Run("no federator", func(t *testing.T) {
		other, err := contract.NewSubjects("nobody")
		if err != nil {
			t.Fatal(err)
		}
		_, err = bus.NewClient(nc, other, "/brig").Call(context.Background(), "b.example.com", "brig", "get-user", nil)
		var e *contract.Error
		if !errors.As(err, &e) || e.Label != contract.LabelComponentUnavailable {
			t.Fatalf("err = %v, want %s", err, contract.LabelComponentUnavailable)
		}
		if err := validateJSON(schema(t, "ErrorBody"), e.JSON()); err != nil {
			t.Error(err)
		}
	})
}

// TestObjectReplyEndToEnd: a component answers with a stream
// (bus.Request.ReplyStream) through a NATS server with JetStream; its real
// replies, in both content modes, validate against the object response
// schemas, and the object they name holds the body.
func TestObjectReplyEndToEnd(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc := connect(t, s)
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("asset "), 50000) // 300,000 bytes: three chunks
	srv, err := bus.Serve(context.Background(), nc, subjects, "cargohold", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		return req.ReplyStream(ctx, "image/jpeg", bytes.NewReader(body))
	}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := subjects.In("cargohold", "stream-asset", "a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured %v", structured), func(t *testing.T) {
			ev := bus.Event{ID: bus.NewID(), Source: "//a.example.com/cargohold", Type: contract.TypeRequest, OriginDomain: "a.example.com", Data: []byte(`{}`), Structured: structured}
			reply, err := nc.RequestMsg(ev.Message(subject), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			headers, payload := "ObjectResponseHeaders", ""
			if structured {
				headers, payload = "StructuredObjectHeaders", "StructuredObjectResponse"
			}
			if err := validateMessage(t, reply, headers, payload); err != nil {
				t.Fatalf("reply: %v\nheaders: %v\nbody: %s", err, reply.Header, reply.Data)
			}
			st, err := js.ObjectStore(context.Background(), reply.Header.Get(contract.HeaderObjectBucket))
			if err != nil {
				t.Fatal(err)
			}
			got, err := st.GetBytes(context.Background(), reply.Header.Get(contract.HeaderObjectName))
			if err != nil || !bytes.Equal(got, body) || reply.Header.Get(contract.HeaderObjectSize) != strconv.Itoa(len(body)) {
				t.Fatalf("object: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestNotificationHeadersRefused checks that the notification schemas
// refuse what the contract does not allow (the e2e test validates real
// messages against them).
func TestNotificationHeadersRefused(t *testing.T) {
	notification := func() map[string][]string {
		return map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"n1"}, "ce-source": {"/galley"}, "ce-type": {contract.TypeNotification}, "Nats-Msg-Id": {"n1"}}
	}
	inbound := func() map[string][]string {
		h := notification()
		h["ce-source"], h["ce-origindomain"], h["Nats-Msg-Id"] = []string{"//a.example.com/galley"}, []string{"a.example.com"}, []string{"a.example.com/n1"}
		return h
	}
	dead := func() map[string][]string {
		h := notification()
		h["Fedbus-Dead-Label"], h["Fedbus-Dead-Status"] = []string{"unknown-component"}, []string{"403"}
		h["Fedbus-Dead-Error"] = []string{`{"code":403,"label":"unknown-component","message":"component chat is not federated"}`}
		h["Fedbus-Dead-Subject"], h["Fedbus-Dead-Time"], h["Fedbus-Dead-Attempts"] = []string{"fed.notify.chat.x.b.example.com"}, []string{"2026-12-01T12:00:00Z"}, []string{"0"}
		h["Nats-Msg-Id"] = []string{"dead/7"}
		return h
	}
	cases := []struct {
		name, schema string
		headers      map[string][]string
		change       func(map[string][]string)
		valid        bool
	}{
		{"notification", "NotificationHeaders", notification(), func(map[string][]string) {}, true},
		{"notification without Nats-Msg-Id", "NotificationHeaders", notification(), func(h map[string][]string) { delete(h, "Nats-Msg-Id") }, false},
		{"notification of a request type", "NotificationHeaders", notification(), func(h map[string][]string) { h["ce-type"] = []string{contract.TypeRequest} }, false},
		{"notification with an origin", "NotificationHeaders", notification(), func(h map[string][]string) { h["ce-origindomain"] = []string{"a.example.com"} }, false},
		{"notification id with a space", "NotificationHeaders", notification(), func(h map[string][]string) { h["ce-id"] = []string{"n 1"} }, false},
		{"inbound", "InboundNotificationHeaders", inbound(), func(map[string][]string) {}, true},
		{"inbound without origin", "InboundNotificationHeaders", inbound(), func(h map[string][]string) { delete(h, "ce-origindomain") }, false},
		{"inbound Nats-Msg-Id without origin", "InboundNotificationHeaders", inbound(), func(h map[string][]string) { h["Nats-Msg-Id"] = []string{"n1"} }, false},
		{"dead letter", "DeadLetterHeaders", dead(), func(map[string][]string) {}, true},
		{"dead letter error not JSON", "DeadLetterHeaders", dead(), func(h map[string][]string) { h["Fedbus-Dead-Error"] = []string{"nope"} }, false},
		{"dead letter error not a contract error", "DeadLetterHeaders", dead(), func(h map[string][]string) { h["Fedbus-Dead-Error"] = []string{`{"code":1}`} }, false},
		{"dead letter without a label", "DeadLetterHeaders", dead(), func(h map[string][]string) { delete(h, "Fedbus-Dead-Label") }, false},
		{"dead letter time not a date", "DeadLetterHeaders", dead(), func(h map[string][]string) { h["Fedbus-Dead-Time"] = []string{"yesterday"} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.change(tc.headers)
			expectValid(t, ValidateHeaders(tc.schema, tc.headers), tc.valid)
		})
	}
}
