package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/fedbus/fedbus/contract"
)

// How long fedctl waits for the running services to answer discovery:
// at most askWait in all, and askQuiet after the last answer.
const (
	askWait  = 500 * time.Millisecond
	askQuiet = 100 * time.Millisecond
)

// Service is one running federator or ingress, as it answers NATS service
// discovery (contract.ServiceName).
type Service struct {
	Role       string   // federator or ingress
	Domain     string   // FED_DOMAIN
	Bucket     string   // FED_KV_BUCKET ("": none)
	Components []string // FED_COMPONENTS
}

func (s Service) String() string {
	bucket := "no bucket"
	if s.Bucket != "" {
		bucket = "bucket " + s.Bucket
	}
	return fmt.Sprintf("%s of %s (%s)", s.Role, s.Domain, bucket)
}

// ErrNotAsked is returned by askServices when the NATS server refused
// fedctl the discovery request (its permissions).
var ErrNotAsked = errors.New("cannot ask the running services")

// askServices asks NATS service discovery for the running fedbus services.
// An empty answer is quick: with no service, NATS answers "no responders"
// at once.
func askServices(nc *nats.Conn) ([]Service, error) {
	prefix := nc.Opts.InboxPrefix
	if prefix == "" {
		prefix = "_INBOX"
	}
	// A reply subject of its own under the inbox: the services' NATS users
	// may publish there (deploy/nats/fedbus.conf) and nowhere else in
	// fedctl's inbox.
	reply := prefix + ".srv." + nuid.Next()
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsked, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, contract.ServiceName, "")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsked, err)
	}
	if err := nc.PublishRequest(subject, reply, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsked, err)
	}
	var out []Service
	deadline := time.Now().Add(askWait)
	for {
		wait := time.Until(deadline)
		if len(out) > 0 {
			wait = min(wait, askQuiet)
		}
		if wait <= 0 {
			break
		}
		msg, err := sub.NextMsg(wait)
		if errors.Is(err, nats.ErrPermissionViolation) {
			return nil, fmt.Errorf("%w: %v", ErrNotAsked, err)
		}
		if err != nil {
			break // no more answers in time
		}
		if len(msg.Data) == 0 && msg.Header.Get(contract.HeaderStatus) == contract.StatusNoResponders {
			break // nothing answers discovery: no service runs
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil || info.Name != contract.ServiceName {
			continue
		}
		m := info.Metadata
		s := Service{Role: m[contract.MetaRole], Domain: m[contract.MetaDomain], Bucket: m[contract.MetaBucket]}
		if c := m[contract.MetaComponents]; c != "" {
			s.Components = strings.Split(c, ",")
		}
		out = append(out, s)
	}
	// A refused publish is reported asynchronously, before the flush's
	// answer.
	if err := nc.Flush(); err == nil && errors.Is(nc.LastError(), nats.ErrPermissionViolation) {
		return nil, fmt.Errorf("%w: %v", ErrNotAsked, nc.LastError())
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// watching returns the services that watch bucket.
func watching(services []Service, bucket string) []Service {
	var out []Service
	for _, s := range services {
		if s.Bucket == bucket {
			out = append(out, s)
		}
	}
	return out
}
