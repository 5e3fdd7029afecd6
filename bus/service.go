package bus

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// ServiceConfig describes a process to the NATS micro service protocol.
type ServiceConfig struct {
	Name        string // contract.ServiceName
	Version     string // SemVer
	Description string
	Metadata    map[string]string
	Endpoints   []ServiceEndpoint
}

// ServiceEndpoint is one endpoint of an announced service: its name,
// subject and queue group as `nats micro info` shows them, and where its
// counts come from.
type ServiceEndpoint struct {
	Name, Subject, Queue string
	Metadata             map[string]string
	// Stats returns the endpoint's counts.
	Stats func() LoopStats
	// Data, when set, is shown as the endpoint's "data" by `nats micro
	// stats --json` (fedctl remotes status reads it).
	Data func() any
}

// Announcement answers the NATS micro service protocol's discovery
// requests ($SRV.PING, $SRV.INFO and $SRV.STATS, for all services, by name
// and by id) for one process, with the counts of its own serve loops.
//
// Why not micro.AddService: a micro endpoint owns its subscription and
// counts a request when its handler returns, one handler at a time per
// subscription; fedbus's Loop handles requests concurrently, so the counts
// would be wrong. The answers use micro's own types and subjects, so the
// nats CLI (`nats micro ls`, `info`, `stats`) shows fedbus like any micro
// service.
type Announcement struct {
	cfg     ServiceConfig
	id      string
	started time.Time
	subs    []*nats.Subscription
	mu      sync.Mutex
}

// Announce subscribes the discovery subjects of cfg on nc. Stop ends it.
func Announce(nc *nats.Conn, cfg ServiceConfig) (*Announcement, error) {
	if cfg.Version == "" {
		cfg.Version = "0.0.0"
	}
	a := &Announcement{cfg: cfg, id: nuid.Next(), started: time.Now().UTC()}
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		for _, sub := range [][2]string{{"", ""}, {cfg.Name, ""}, {cfg.Name, a.id}} {
			subject, err := micro.ControlSubject(verb, sub[0], sub[1])
			if err != nil {
				_ = a.Stop()
				return nil, fmt.Errorf("announce %s: %w", cfg.Name, err)
			}
			s, err := nc.Subscribe(subject, a.answer(verb))
			if err != nil {
				_ = a.Stop()
				return nil, fmt.Errorf("announce %s: subscribe %s: %w", cfg.Name, subject, err)
			}
			a.subs = append(a.subs, s)
		}
	}
	return a, nil
}

// ID returns the instance id of the announced process.
func (a *Announcement) ID() string { return a.id }

// Stop unsubscribes the discovery subjects. It returns nil: an
// unsubscribe fails only on a closed connection, which answers nothing.
func (a *Announcement) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	a.subs = nil
	return nil
}

func (a *Announcement) identity() micro.ServiceIdentity {
	md := maps.Clone(a.cfg.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	return micro.ServiceIdentity{Name: a.cfg.Name, ID: a.id, Version: a.cfg.Version, Metadata: md}
}

func (a *Announcement) answer(verb micro.Verb) nats.MsgHandler {
	return func(msg *nats.Msg) {
		if msg.Reply == "" {
			return
		}
		var v any
		switch verb {
		case micro.PingVerb:
			v = micro.Ping{ServiceIdentity: a.identity(), Type: micro.PingResponseType}
		case micro.InfoVerb:
			v = a.Info()
		default:
			v = a.Stats()
		}
		body, err := json.Marshal(v)
		if err != nil {
			return
		}
		_ = msg.Respond(body)
	}
}

// Info is the answer to $SRV.INFO.
func (a *Announcement) Info() micro.Info {
	info := micro.Info{ServiceIdentity: a.identity(), Type: micro.InfoResponseType, Description: a.cfg.Description, Endpoints: []micro.EndpointInfo{}}
	for _, e := range a.cfg.Endpoints {
		md := maps.Clone(e.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: e.Name, Subject: e.Subject, QueueGroup: e.Queue, Metadata: md})
	}
	return info
}

// Stats is the answer to $SRV.STATS.
func (a *Announcement) Stats() micro.Stats {
	st := micro.Stats{ServiceIdentity: a.identity(), Type: micro.StatsResponseType, Started: a.started, Endpoints: []*micro.EndpointStats{}}
	for _, e := range a.cfg.Endpoints {
		es := &micro.EndpointStats{Name: e.Name, Subject: e.Subject, QueueGroup: e.Queue}
		if e.Stats != nil {
			s := e.Stats()
			es.NumRequests, es.NumErrors, es.LastError = int(s.Requests), int(s.Errors), s.LastError
			es.ProcessingTime = s.Processing
			if s.Requests > 0 {
				es.AverageProcessingTime = s.Processing / time.Duration(s.Requests)
			}
		}
		if e.Data != nil {
			if data, err := json.Marshal(e.Data()); err == nil {
				es.Data = data
			}
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}
