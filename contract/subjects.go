package contract

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the default of FED_SUBJECT_PREFIX, the first subject
// token(s).
const DefaultPrefix = "fed"

// The second subject token: what kind of message the subject carries.
const (
	kindOut    = "out"    // section 1: component → federator, request-reply
	kindIn     = "in"     // section 3: ingress → component, request-reply
	kindNotify = "notify" // section 6: component → federator, JetStream
	kindInbox  = "inbox"  // section 6: ingress → component, JetStream
	kindStatus = "status" // section 7: remote status events
	// fedbus additions around section 6 (not in the contract's text):
	kindDead     = "dead"     // dead letters: notifications set aside
	kindNotified = "notified" // headers of each stored notification (stream RePublish)
	kindContact  = "contact"  // an inbound request of a remote arrived (ingress → federators)
)

// Subjects builds and parses the subjects of one deployment (one prefix).
// It is the only place that builds a subject: every token is checked
// against the contract's rules first, so that no wildcard, white space or
// empty token can widen a subscription or a publish.
type Subjects struct {
	prefix                         string // validated, e.g. "fed"
	out, in, notify, inbox, status string // "fed.out." and so on
	dead, notified, contact        string
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
	p := prefix + "."
	return Subjects{prefix: prefix, out: p + kindOut + ".", in: p + kindIn + ".", notify: p + kindNotify + ".",
		inbox: p + kindInbox + ".", status: p + kindStatus + ".",
		dead: p + kindDead + ".", notified: p + kindNotified + ".", contact: p + kindContact + "."}, nil
}

// Prefix returns the first subject token(s).
func (s Subjects) Prefix() string { return s.prefix }

// Route is the parsed form of a request or notification subject.
type Route struct {
	Component string
	RPC       string
	Domain    string // canonical: the target (out, notify) or origin (in, inbox)
}

// Out returns fed.out.<component>.<rpc>.<target>, validating every token.
func (s Subjects) Out(component, rpc, target string) (string, error) {
	return build(s.out, component, rpc, target)
}

// In returns fed.in.<component>.<rpc>.<origin>, validating every token.
func (s Subjects) In(component, rpc, origin string) (string, error) {
	return build(s.in, component, rpc, origin)
}

// Notify returns fed.notify.<component>.<rpc>.<target> (section 6).
func (s Subjects) Notify(component, rpc, target string) (string, error) {
	return build(s.notify, component, rpc, target)
}

// Inbox returns fed.inbox.<component>.<rpc>.<origin> (section 6).
func (s Subjects) Inbox(component, rpc, origin string) (string, error) {
	return build(s.inbox, component, rpc, origin)
}

// Dead returns fed.dead.<component>.<rpc>.<target>: where a notification
// to target that was set aside is kept (a fedbus addition to section 6).
func (s Subjects) Dead(component, rpc, target string) (string, error) {
	return build(s.dead, component, rpc, target)
}

// DeadInvalid is the dead-letter subject of a notification whose own
// subject breaks the token rules (its component, rpc or domain cannot
// name a dead-letter subject): fed.dead._invalid.
func (s Subjects) DeadInvalid() string { return s.dead + "_invalid" }

// Status returns fed.status.<domain> (section 7).
func (s Subjects) Status(domain string) (string, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return "", err
	}
	return s.status + d, nil
}

func build(base, component, rpc, domain string) (string, error) {
	r, err := checkRoute(component, rpc, domain)
	if err != nil {
		return "", err
	}
	return base + r.Component + "." + r.RPC + "." + r.Domain, nil
}

// checkRoute validates and canonicalises the three tokens.
func checkRoute(component, rpc, domain string) (Route, error) {
	if !ValidComponent(component) {
		return Route{}, Errorf(LabelInvalidEndpoint, "component %q is not [a-z0-9-]{1,63}", Truncate(component, 64))
	}
	if !ValidRPC(rpc) {
		return Route{}, Errorf(LabelInvalidEndpoint, "rpc %q is not [A-Za-z0-9_-]{1,128}", Truncate(rpc, 64))
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Route{}, err
	}
	return Route{Component: component, RPC: rpc, Domain: d}, nil
}

// OutAll is the federators' subscription: fed.out.>.
func (s Subjects) OutAll() string { return s.out + ">" }

// InAll is every inbound request subject: fed.in.>.
func (s Subjects) InAll() string { return s.in + ">" }

// NotifyAll is what the notification stream holds: fed.notify.>.
func (s Subjects) NotifyAll() string { return s.notify + ">" }

// InboxAll is what the inbound notification stream holds: fed.inbox.>.
func (s Subjects) InboxAll() string { return s.inbox + ">" }

// DeadAll is what the dead-letter stream holds: fed.dead.>.
func (s Subjects) DeadAll() string { return s.dead + ">" }

// NotifiedAll is where the notification stream republishes the headers of
// each notification it stored (fed.notified.<component>.<rpc>.<target>):
// the federators' wake-up call. It mirrors NotifyAll token for token.
func (s Subjects) NotifiedAll() string { return s.notified + ">" }

// Contact returns fed.contact.<origin>: the ingress tells the federators
// that a request of origin arrived, so that notifications waiting for it
// are retried at once.
func (s Subjects) Contact(origin string) (string, error) {
	d, err := NormalizeDomain(origin)
	if err != nil {
		return "", err
	}
	return s.contact + d, nil
}

// ContactAll is the federators' subscription to contact signals:
// fed.contact.>.
func (s Subjects) ContactAll() string { return s.contact + ">" }

// StatusAll is the subscription to every remote status event: fed.status.>.
func (s Subjects) StatusAll() string { return s.status + ">" }

// NotifyDomain is the filter of one destination's notifications:
// fed.notify.*.*.<target>.
func (s Subjects) NotifyDomain(target string) (string, error) {
	d, err := NormalizeDomain(target)
	if err != nil {
		return "", err
	}
	return s.notify + "*.*." + d, nil
}

// DeadDomain is the filter of one destination's dead letters:
// fed.dead.*.*.<target>.
func (s Subjects) DeadDomain(target string) (string, error) {
	d, err := NormalizeDomain(target)
	if err != nil {
		return "", err
	}
	return s.dead + "*.*." + d, nil
}

// InComponent is a component's subscription: fed.in.<component>.>.
func (s Subjects) InComponent(component string) (string, error) {
	return s.componentAll(s.in, component)
}

// InboxOrigin is the filter of one origin's notifications to a component:
// fed.inbox.<component>.*.<origin>.
func (s Subjects) InboxOrigin(component, origin string) (string, error) {
	r, err := checkRoute(component, "any", origin)
	if err != nil {
		return "", err
	}
	return s.inbox + r.Component + ".*." + r.Domain, nil
}

// InboxComponent is a component's notification filter: fed.inbox.<component>.>.
func (s Subjects) InboxComponent(component string) (string, error) {
	return s.componentAll(s.inbox, component)
}

func (s Subjects) componentAll(base, component string) (string, error) {
	if !ValidComponent(component) {
		return "", Errorf(LabelInvalidEndpoint, "component %q is not [a-z0-9-]{1,63}", Truncate(component, 64))
	}
	return base + component + ".>", nil
}

// ParseOut parses an outbound request subject. Errors are *Error with the
// label invalid-endpoint or domain-parse-error.
func (s Subjects) ParseOut(subject string) (Route, error) { return parse(s.out, subject) }

// ParseIn parses an inbound request subject.
func (s Subjects) ParseIn(subject string) (Route, error) { return parse(s.in, subject) }

// ParseNotify parses an outbound notification subject.
func (s Subjects) ParseNotify(subject string) (Route, error) { return parse(s.notify, subject) }

// ParseInbox parses an inbound notification subject.
func (s Subjects) ParseInbox(subject string) (Route, error) { return parse(s.inbox, subject) }

// ParseDead parses a dead-letter subject (not DeadInvalid).
func (s Subjects) ParseDead(subject string) (Route, error) { return parse(s.dead, subject) }

// ParseNotified parses the subject of a republished notification's
// headers and returns the route of the notification.
func (s Subjects) ParseNotified(subject string) (Route, error) { return parse(s.notified, subject) }

// ParseContact parses fed.contact.<origin> and returns the origin.
func (s Subjects) ParseContact(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, s.contact)
	if !ok {
		return "", Errorf(LabelInvalidEndpoint, "subject %q does not start with %q", Truncate(subject, 64), s.contact)
	}
	return NormalizeDomain(rest)
}

// ParseStatus parses fed.status.<domain> and returns the domain.
func (s Subjects) ParseStatus(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, s.status)
	if !ok {
		return "", Errorf(LabelInvalidEndpoint, "subject %q does not start with %q", Truncate(subject, 64), s.status)
	}
	return NormalizeDomain(rest)
}

func parse(base, subject string) (Route, error) {
	rest, ok := strings.CutPrefix(subject, base)
	if !ok {
		return Route{}, Errorf(LabelInvalidEndpoint, "subject %q does not start with %q", Truncate(subject, 64), base)
	}
	component, rest, ok1 := strings.Cut(rest, ".")
	rpc, domain, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return Route{}, Errorf(LabelInvalidEndpoint, "subject %q is not %s<component>.<rpc>.<domain>", Truncate(subject, 64), base)
	}
	return checkRoute(component, rpc, domain)
}
