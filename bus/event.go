package bus

import (
	"encoding/json"
	"mime"
	"net/url"
	"strconv"
	"strings"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Event is a fedbus message: a CloudEvents 1.0 event carried by NATS in
// binary content mode (attributes in ce- headers, data in the body) or in
// structured content mode (the whole event as JSON in the body).
type Event struct {
	ID              string
	Source          string
	Type            string
	DataContentType string // empty means application/json
	TraceParent     string // W3C traceparent, optional
	OriginDomain    string // extension origindomain, set by the ingress
	TimeoutMs       int64  // extension timeoutms, 0 when absent
	Data            []byte
	// Object, when set, names the object of the JetStream object store
	// that holds the body instead of Data (contract section 8): the
	// headers Fedbus-Object-Bucket, -Name and -Size, in structured mode
	// also the extensions fedbusobjectbucket, -name and -size.
	Object ObjectRef
	// Structured reports (on decode) or selects (on encode) structured mode.
	Structured bool
}

// NewID returns a new unique event id.
func NewID() string { return nuid.Next() }

// Decode reads an event from a NATS message. Anything that is not a valid
// CloudEvent fails with a *Error labelled invalid-request.
func Decode(msg *nats.Msg) (Event, error) {
	if ct := msg.Header.Get(contract.HeaderContentType); isStructured(ct) {
		return decodeStructured(msg.Header, msg.Data)
	}
	return decodeBinary(msg)
}

func isStructured(contentType string) bool {
	switch contentType {
	case "", contract.ContentTypeJSON: // binary mode's common case, without ParseMediaType's allocations
		return false
	case contract.ContentTypeCEJSON:
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == contract.ContentTypeCEJSON
}

func decodeBinary(msg *nats.Msg) (Event, error) {
	h := msg.Header
	ev := Event{
		ID:              h.Get(contract.HeaderID),
		Source:          h.Get(contract.HeaderSource),
		Type:            h.Get(contract.HeaderType),
		DataContentType: h.Get(contract.HeaderDataContentType),
		TraceParent:     h.Get(contract.HeaderTraceParent),
		OriginDomain:    h.Get(contract.HeaderOriginDomain),
		Data:            msg.Data,
	}
	if v := h.Get(contract.HeaderSpecVersion); v != contract.SpecVersion {
		if v == "" {
			return Event{}, contract.Errorf(contract.LabelInvalidRequest, "not a CloudEvent: header %s is missing", contract.HeaderSpecVersion)
		}
		return Event{}, contract.Errorf(contract.LabelInvalidRequest, "unsupported CloudEvents %s %q (want %s)", contract.HeaderSpecVersion, contract.Truncate(v, 16), contract.SpecVersion)
	}
	if ms := h.Get(contract.HeaderTimeoutMs); ms != "" {
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil || n <= 0 {
			return Event{}, contract.Errorf(contract.LabelInvalidRequest, "header %s %q is not a positive integer", contract.HeaderTimeoutMs, contract.Truncate(ms, 32))
		}
		ev.TimeoutMs = n
	}
	if h.Get(contract.HeaderObjectBucket) != "" || h.Get(contract.HeaderObjectName) != "" || h.Get(contract.HeaderObjectSize) != "" {
		ref, err := parseObjectRef(h.Get(contract.HeaderObjectBucket), h.Get(contract.HeaderObjectName), h.Get(contract.HeaderObjectSize))
		if err != nil {
			return Event{}, err
		}
		ev.Object = ref
	}
	if err := ev.validate(); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// validate checks the required attributes.
func (e Event) validate() error {
	switch {
	case e.ID == "":
		return contract.Errorf(contract.LabelInvalidRequest, "CloudEvent attribute id is missing")
	case e.Type == "":
		return contract.Errorf(contract.LabelInvalidRequest, "CloudEvent attribute type is missing")
	case e.Source == "":
		return contract.Errorf(contract.LabelInvalidRequest, "CloudEvent attribute source is missing")
	}
	if e.DataContentType != "" && e.DataContentType != contract.ContentTypeJSON { // the common case needs no parsing
		if _, _, err := mime.ParseMediaType(e.DataContentType); err != nil {
			return contract.Errorf(contract.LabelInvalidRequest, "CloudEvent attribute datacontenttype %q is not a media type", contract.Truncate(e.DataContentType, 64))
		}
	}
	if !simpleURIRef(e.Source) {
		// A reference that parses to nothing ("#") cannot be carried in
		// structured mode: refuse it in both.
		if u, err := url.Parse(e.Source); err != nil || u.String() == "" {
			return contract.Errorf(contract.LabelInvalidRequest, "CloudEvent attribute source %q is not a URI reference", contract.Truncate(e.Source, 64))
		}
	}
	return nil
}

// simpleURIRef reports whether s starts with "/" and is made only of
// characters that can stand anywhere in a path or authority (unreserved,
// sub-delims, ":", "@", "/", "?"), so that it needs no parsing to be known
// valid: "/brig", "//a.example.com/brig". Anything else ("%", "#", non-ASCII, spaces) goes
// through url.Parse.
func simpleURIRef(s string) bool {
	if len(s) == 0 || s[0] != '/' { // a relative or scheme reference needs the parser
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func decodeStructured(h nats.Header, body []byte) (Event, error) {
	var ev ce.Event
	if err := ev.UnmarshalJSON(body); err != nil {
		return Event{}, contract.Errorf(contract.LabelInvalidRequest, "structured CloudEvent is not valid JSON event: %v", err)
	}
	if err := ev.Validate(); err != nil {
		return Event{}, contract.Errorf(contract.LabelInvalidRequest, "structured CloudEvent is invalid: %v", err)
	}
	if ev.SpecVersion() != contract.SpecVersion {
		return Event{}, contract.Errorf(contract.LabelInvalidRequest, "unsupported CloudEvents specversion %q (want %s)", contract.Truncate(ev.SpecVersion(), 16), contract.SpecVersion)
	}
	out := Event{
		ID:              ev.ID(),
		Source:          ev.Source(),
		Type:            ev.Type(),
		DataContentType: ev.DataContentType(),
		Data:            ev.Data(),
		Structured:      true,
	}
	ext := ev.Extensions()
	out.TraceParent = extString(ext, "traceparent")
	out.OriginDomain = extString(ext, "origindomain")
	if v, ok := ext["timeoutms"]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(toString(v)), 10, 64)
		if err != nil || n <= 0 {
			return Event{}, contract.Errorf(contract.LabelInvalidRequest, "extension timeoutms is not a positive integer")
		}
		out.TimeoutMs = n
	}
	// The object reference: the extensions, or else the headers (fedbus
	// writes both).
	bucket, name, size := extString(ext, contract.ExtObjectBucket), extString(ext, contract.ExtObjectName), extString(ext, contract.ExtObjectSize)
	if bucket == "" && name == "" && size == "" {
		bucket, name, size = h.Get(contract.HeaderObjectBucket), h.Get(contract.HeaderObjectName), h.Get(contract.HeaderObjectSize)
	}
	if bucket != "" || name != "" || size != "" {
		ref, err := parseObjectRef(bucket, name, strings.TrimSpace(size))
		if err != nil {
			return Event{}, err
		}
		out.Object = ref
	}
	return out, nil
}

// isJSONType reports whether a content type is JSON (application/json or
// a +json suffix).
func isJSONType(ct string) bool {
	if ct == contract.ContentTypeJSON {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == contract.ContentTypeJSON || strings.HasSuffix(mt, "+json"))
}

func extString(ext map[string]any, name string) string {
	if v, ok := ext[name]; ok {
		return toString(v)
	}
	return ""
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return ""
	}
}

// Message encodes the event as a NATS message for subject (which may be a
// reply inbox). Binary mode unless e.Structured.
func (e Event) Message(subject string) *nats.Msg {
	if e.Structured {
		return e.structuredMessage(subject)
	}
	// One backing array for every header's value slice.
	vals := make([]string, 0, 8)
	h := make(nats.Header, 8)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(contract.HeaderSpecVersion, contract.SpecVersion)
	set(contract.HeaderID, e.ID)
	set(contract.HeaderSource, e.Source)
	set(contract.HeaderType, e.Type)
	if e.DataContentType != "" {
		set(contract.HeaderDataContentType, e.DataContentType)
	}
	if e.TraceParent != "" {
		set(contract.HeaderTraceParent, e.TraceParent)
	}
	if e.OriginDomain != "" {
		set(contract.HeaderOriginDomain, e.OriginDomain)
	}
	if e.TimeoutMs > 0 {
		set(contract.HeaderTimeoutMs, strconv.FormatInt(e.TimeoutMs, 10))
	}
	if !e.Object.IsZero() {
		set(contract.HeaderObjectBucket, e.Object.Bucket)
		set(contract.HeaderObjectName, e.Object.Name)
		set(contract.HeaderObjectSize, strconv.FormatInt(e.Object.Size, 10))
	}
	return &nats.Msg{Subject: subject, Header: h, Data: e.Data}
}

func (e Event) structuredMessage(subject string) *nats.Msg {
	ev := ce.New(contract.SpecVersion)
	ev.SetID(e.ID)
	ev.SetSource(e.Source)
	ev.SetType(e.Type)
	ct := e.DataContentType
	if ct == "" {
		ct = contract.ContentTypeJSON
	}
	if e.TraceParent != "" {
		ev.SetExtension("traceparent", e.TraceParent)
	}
	if e.OriginDomain != "" {
		ev.SetExtension("origindomain", e.OriginDomain)
	}
	if e.TimeoutMs > 0 {
		ev.SetExtension("timeoutms", strconv.FormatInt(e.TimeoutMs, 10))
	}
	if !e.Object.IsZero() {
		ev.SetExtension(contract.ExtObjectBucket, e.Object.Bucket)
		ev.SetExtension(contract.ExtObjectName, e.Object.Name)
		ev.SetExtension(contract.ExtObjectSize, strconv.FormatInt(e.Object.Size, 10))
	}
	ev.SetDataContentType(ct)
	if len(e.Data) > 0 {
		// JSON data is carried as "data" (a JSON value), anything else as
		// "data_base64".
		ev.DataEncoded = e.Data
		ev.DataBase64 = !(isJSONType(ct) && json.Valid(e.Data))
	}
	body, err := ev.MarshalJSON()
	if err != nil { // cannot happen for a valid id/source/type; keep one reply
		body = []byte(`{"specversion":"1.0","id":"` + NewID() + `","source":"/fedbus","type":"` + contract.TypeError + `"}`)
	}
	h := nats.Header{contract.HeaderContentType: []string{contract.ContentTypeCEJSON}}
	if !e.Object.IsZero() {
		// The headers too: the contract names them, in either mode.
		h[contract.HeaderObjectBucket] = []string{e.Object.Bucket}
		h[contract.HeaderObjectName] = []string{e.Object.Name}
		h[contract.HeaderObjectSize] = []string{strconv.FormatInt(e.Object.Size, 10)}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: body}
}

// Reply builds the reply event to a request: fedbus.response with body, in
// the request's content mode. It carries the request's id (with its own
// source, the pair stays unique), which ties the two together in logs.
func Reply(req Event, source string, body []byte) Event {
	return Event{ID: req.ID, Source: source, Type: contract.TypeResponse, DataContentType: contract.ContentTypeJSON, Data: body, Structured: req.Structured}
}

// ObjectReply builds the fedbus.response to a request whose body is the
// object ref of the object store (contract section 8): no data, the
// object's headers and contentType (application/octet-stream when empty),
// in the request's content mode.
func ObjectReply(req Event, source, contentType string, ref ObjectRef) Event {
	if contentType == "" {
		contentType = contract.ContentTypeOctetStream
	}
	return Event{ID: req.ID, Source: source, Type: contract.TypeResponse, DataContentType: contentType, Object: ref, Structured: req.Structured}
}

// ErrorReply builds the fedbus.error reply to a request, in its content mode.
func ErrorReply(structured bool, source string, e *contract.Error) Event {
	return Event{ID: NewID(), Source: source, Type: contract.TypeError, DataContentType: contract.ContentTypeJSON, Data: e.JSON(), Structured: structured}
}

// WantsStructured reports whether a raw request message is in structured
// mode, for choosing the mode of an error reply to a message that could not
// be decoded.
func WantsStructured(msg *nats.Msg) bool {
	return isStructured(msg.Header.Get(contract.HeaderContentType))
}
