package bus

import (
	"fmt"
	"strings"
)

// Header names of the NATS messages (CloudEvents binary content mode) and of
// the HTTP requests between backends. This file is the one place that builds
// and parses subjects and names headers.
const (
	HeaderSpecVersion     = "ce-specversion"
	HeaderID              = "ce-id"
	HeaderSource          = "ce-source"
	HeaderType            = "ce-type"
	HeaderDataContentType = "ce-datacontenttype"
	HeaderTraceParent     = "ce-traceparent"
	HeaderOriginDomain    = "ce-origindomain"
	// HeaderTimeoutMs is a fedbus extension: how many milliseconds the
	// caller still waits. The federator and components use it to bound their
	// own work; it is optional.
	HeaderTimeoutMs = "ce-timeoutms"
	// HeaderContentType is the NATS header that marks structured mode.
	HeaderContentType = "content-type"
	// natsStatusHeader and natsNoResponders: the status line of the NATS
	// message the server sends to a request's reply subject when nothing
	// subscribes to its subject (nats.go reads it as the "Status" header).
	natsStatusHeader = "Status"
	natsNoResponders = "503"

	HTTPOriginDomain    = "Wire-Origin-Domain"
	HTTPOriginDomainOld = "Wire-Domain"
	HTTPRequestID       = "Request-Id"
	HTTPRequestTimeout  = "Request-Timeout-Ms"
	HTTPTraceParent     = "traceparent"
	HTTPContentType     = "Content-Type"
	HTTPRetryAfter      = "Retry-After" // on a 429: seconds or an HTTP-date
	HTTPDate            = "Date"
)

// CloudEvents attribute values of the contract.
const (
	SpecVersion         = "1.0"
	TypeRequest         = "fedbus.request"
	TypeResponse        = "fedbus.response"
	TypeError           = "fedbus.error"
	ContentTypeJSON     = "application/json"
	ContentTypeCEJSON   = "application/cloudevents+json"
	DefaultPrefix       = "fed"
	directionOut        = "out"
	directionIn         = "in"
	FederatorQueueGroup = "federator"
)

// Subjects builds and parses the subjects of one deployment (one prefix).
type Subjects struct {
	prefix string // validated, e.g. "fed"
	out    string // "fed.out."
	in     string // "fed.in."
}

// NewSubjects returns the subject registry for a prefix (FED_SUBJECT_PREFIX).
// The prefix is one or more dot-separated tokens of [A-Za-z0-9_-].
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		return Subjects{}, fmt.Errorf("subject prefix: empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if !ValidRPC(tok) {
			return Subjects{}, fmt.Errorf("subject prefix %q: token %q is not [A-Za-z0-9_-]{1,128}", prefix, tok)
		}
	}
	return Subjects{prefix: prefix, out: prefix + "." + directionOut + ".", in: prefix + "." + directionIn + "."}, nil
}

// Prefix returns the first subject token(s).
func (s Subjects) Prefix() string { return s.prefix }

// Route is the parsed form of a request subject.
type Route struct {
	Component string
	RPC       string
	Domain    string // canonical: the target (outbound) or origin (inbound)
}

// Out returns fed.out.<component>.<rpc>.<target>, validating every token.
func (s Subjects) Out(component, rpc, target string) (string, error) {
	return s.build(s.out, component, rpc, target)
}

// In returns fed.in.<component>.<rpc>.<origin>, validating every token.
func (s Subjects) In(component, rpc, origin string) (string, error) {
	return s.build(s.in, component, rpc, origin)
}

func (s Subjects) build(base, component, rpc, domain string) (string, error) {
	r, err := checkRoute(component, rpc, domain)
	if err != nil {
		return "", err
	}
	return base + r.Component + "." + r.RPC + "." + r.Domain, nil
}

// checkRoute validates and canonicalises the three tokens.
func checkRoute(component, rpc, domain string) (Route, error) {
	if !ValidComponent(component) {
		return Route{}, Errorf(LabelInvalidEndpoint, "component %q is not [a-z0-9-]{1,63}", truncate(component, 64))
	}
	if !ValidRPC(rpc) {
		return Route{}, Errorf(LabelInvalidEndpoint, "rpc %q is not [A-Za-z0-9_-]{1,128}", truncate(rpc, 64))
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Route{}, err
	}
	return Route{Component: component, RPC: rpc, Domain: d}, nil
}

// OutAll is the federators' subscription: fed.out.>.
func (s Subjects) OutAll() string { return s.out + ">" }

// InComponent is a component's subscription: fed.in.<component>.>.
func (s Subjects) InComponent(component string) (string, error) {
	if !ValidComponent(component) {
		return "", Errorf(LabelInvalidEndpoint, "component %q is not [a-z0-9-]{1,63}", truncate(component, 64))
	}
	return s.in + component + ".>", nil
}

// ParseOut parses an outbound request subject. Errors are *Error with the
// label invalid-endpoint or domain-parse-error.
func (s Subjects) ParseOut(subject string) (Route, error) {
	return parse(s.out, subject)
}

// ParseIn parses an inbound request subject.
func (s Subjects) ParseIn(subject string) (Route, error) {
	return parse(s.in, subject)
}

func parse(base, subject string) (Route, error) {
	rest, ok := strings.CutPrefix(subject, base)
	if !ok {
		return Route{}, Errorf(LabelInvalidEndpoint, "subject %q does not start with %q", truncate(subject, 64), base)
	}
	component, rest, ok1 := strings.Cut(rest, ".")
	rpc, domain, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return Route{}, Errorf(LabelInvalidEndpoint, "subject %q is not %s<component>.<rpc>.<domain>", truncate(subject, 64), base)
	}
	return checkRoute(component, rpc, domain)
}
