package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// ScenarioNotifications is the notification benchmark (RunNotify).
const ScenarioNotifications = "notifications"

// NotifyConfig is the notification benchmark:
//
//   - drain: a backlog of Backlog notifications to one destination behind
//     a proxy that adds RTT to every round trip, drained by fedbus with
//     batches (each of BatchSizes), by fedbus to a remote that takes no
//     batches (one notification per request, as to wire-server), and by
//     the one-at-a-time model of wire-server (one notification in flight,
//     acknowledged before the next is fetched, as a RabbitMQ consumer with
//     prefetch 1);
//   - throughput: Throughput notifications published to Destinations
//     destinations (all served by one remote ingress), delivered by two
//     federator workers;
//   - latency: LatencySamples notifications published one at a time with
//     nothing backed up, from the publish to the remote component's
//     handler;
//   - resources: Waiting destinations, each with a backlog of one and
//     unreachable, what they cost once each failed once and waits for its
//     next attempt.
type NotifyConfig struct {
	Backlog int
	// BaselineBacklog is the backlog of the two one-per-request runs
	// (Backlog when 0): they take one round trip per notification, so a
	// smaller backlog measures their rate in less time.
	BaselineBacklog int
	RTT             time.Duration
	BatchSizes      []int
	Destinations    int
	Throughput      int
	LatencySamples  int
	// Waiting is the number of destinations of the resources run: each
	// has one notification and is unreachable (0: no such run).
	Waiting  int
	BodySize int
	Out      io.Writer
	Logger   *slog.Logger // progress
}

// The notification benchmark's backends.
const (
	notifyRPC       = "on-member-join"
	notifyComponent = "galley"
)

// notifyWorld is a CA and a DNS server shared by the runs.
type notifyWorld struct {
	ca  *testbed.CA
	dns *testbed.DNS
	dir string
	log *slog.Logger // services'
}

// sink counts the notifications a component handled and when the last
// expected one arrived.
type sink struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
	once   sync.Once
	last   chan time.Time // each handled notification's time, when not nil
}

// wait waits until every expected notification was handled.
func (s *sink) wait(ctx context.Context, what string) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %d of %d delivered: %w", what, s.n.Load(), s.target, ctx.Err())
	}
}

func newSink(target int) *sink {
	return &sink{target: int64(target), done: make(chan struct{})}
}

func (s *sink) handle(_ context.Context, _ *bus.Notification) error {
	if s.last != nil {
		s.last <- time.Now()
	}
	if s.n.Add(1) >= s.target {
		s.once.Do(func() { close(s.done) })
	}
	return nil
}

// pair is A and B for one run, closed together.
type pair struct {
	a, b    *fedtest.Backend
	srv     *bus.NotificationServer
	closers []func()
}

func (p *pair) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// pairOptions configure startPair.
type pairOptions struct {
	envA, envB   map[string]string
	federators   int  // of A
	noFederators bool // none in A (the wire-server model delivers)
	wrapB        func(http.Handler) http.Handler
}

// startPair starts B (allowing A), its galley consuming into s, then A
// (allowing every domain).
func (w *notifyWorld) startPair(o pairOptions, s *sink) (*pair, error) {
	p := &pair{}
	closeBackend := func(be *fedtest.Backend) func() {
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = be.Close(ctx)
		}
	}
	envB := map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0", "FED_INGRESS_CERT_RATE": "0", "FED_INGRESS_CERT_CONCURRENCY": "0"}
	for k, v := range o.envB {
		envB[k] = v
	}
	b, err := fedtest.StartBackend(fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: w.ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainA}, Logger: w.log, Env: envB, WrapIngress: o.wrapB, NoFederators: true})
	if err != nil {
		return nil, err
	}
	p.b = b
	p.closers = append(p.closers, closeBackend(b))
	p.srv, err = bus.ServeNotifications(context.Background(), b.JetStream, b.Subjects, notifyComponent, s.handle,
		bus.NotificationOptions{Logger: w.log, MaxInFlight: 1024})
	if err != nil {
		p.close()
		return nil, err
	}
	p.closers = append(p.closers, func() { _ = p.srv.Shutdown(context.Background()) })
	env := map[string]string{"FED_REQUEST_TIMEOUT": "30s"}
	for k, v := range o.envA {
		env[k] = v
	}
	a, err := fedtest.StartBackend(fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: w.ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-all", Logger: w.log, Env: env, Federators: max(o.federators, 1), NoFederators: o.noFederators})
	if err != nil {
		p.close()
		return nil, err
	}
	p.a = a
	p.closers = append(p.closers, closeBackend(a))
	return p, nil
}

// startProxied is startPair with a delaying proxy (rtt) in front of B's
// ingress, closed with the pair.
func (w *notifyWorld) startProxied(o pairOptions, s *sink, rtt time.Duration) (*pair, *delayProxy, error) {
	p, err := w.startPair(o, s)
	if err != nil {
		return nil, nil, err
	}
	proxy, err := startDelayProxy(p.b.IngressAddr, rtt)
	if err != nil {
		p.close()
		return nil, nil, err
	}
	p.closers = append(p.closers, proxy.close)
	return p, proxy, nil
}

// waitStream waits for A's notification stream (the federator creates it
// at start), or creates it when A runs no federator.
func waitStream(ctx context.Context, a *fedtest.Backend, create bool) (jetstream.Stream, error) {
	if create {
		s, _, err := notify.Ensure(ctx, a.JetStream, notify.OutboundConfig(contract.DefaultNotifyStream, a.Subjects, notify.Limits{Duplicates: 2 * time.Minute}))
		return s, err
	}
	for {
		s, err := a.JetStream.Stream(ctx, contract.DefaultNotifyStream)
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// publishN publishes n notifications from A's galley, spread over the
// targets, from 16 goroutines.
func publishN(ctx context.Context, a *fedtest.Backend, targets []string, n, bodySize int) error {
	body := append(append([]byte(`"`), bytes.Repeat([]byte("x"), max(bodySize-2, 0))...), '"')
	notifier := a.Notifier("/" + notifyComponent)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if _, err := notifier.Notify(ctx, targets[int(i)%len(targets)], notifyComponent, notifyRPC, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// drainResult is one drain run.
type drainResult struct {
	name     string
	backlog  int
	elapsed  time.Duration
	requests int64
}

func (r drainResult) rate() float64 { return float64(r.backlog) / r.elapsed.Seconds() }

// drainFedbus drains a backlog with fedbus's federator: batch is
// FED_NOTIFY_BATCH; without remoteBatches B announces no batches.
func (w *notifyWorld) drainFedbus(ctx context.Context, cfg NotifyConfig, name string, batch, backlog int, remoteBatches bool) (drainResult, error) {
	var requests atomic.Int64
	count := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if r.URL.Path == contract.BatchPath || r.Header.Get(contract.HTTPNotificationID) != "" {
				requests.Add(1)
			}
			next.ServeHTTP(rw, r)
		})
	}
	envB := map[string]string{}
	if !remoteBatches {
		envB["FED_INGRESS_BATCH_MAX"] = "0"
	}
	s := newSink(backlog)
	p, proxy, err := w.startProxied(pairOptions{envA: map[string]string{"FED_NOTIFY_BATCH": strconv.Itoa(batch),
		"FED_NOTIFY_RETRY_MIN": "1h", "FED_NOTIFY_RETRY_MAX": "1h"}, envB: envB, wrapB: count}, s, cfg.RTT)
	if err != nil {
		return drainResult{}, err
	}
	defer p.close()
	proxy.setOpen(false)
	w.dns.SetSRV(domainB, 60, testbed.SRVRecord{Target: infraB, Port: proxy.port(), Priority: 10, Weight: 5})
	if _, err := waitStream(ctx, p.a, false); err != nil {
		return drainResult{}, err
	}
	if err := publishN(ctx, p.a, []string{domainB}, backlog, cfg.BodySize); err != nil {
		return drainResult{}, err
	}
	store, err := notify.OpenStore(ctx, p.a.JetStream, notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 1)
	if err != nil {
		return drainResult{}, err
	}
	for { // the first attempt failed: the backlog waits, nothing in flight
		st, err := store.State(ctx, domainB)
		if err != nil {
			return drainResult{}, err
		}
		if st.Attempts > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return drainResult{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	proxy.setOpen(true)
	requests.Store(0)
	start := time.Now()
	if _, err := store.RetryNow(ctx, domainB); err != nil { // as fedctl notifications retry
		return drainResult{}, err
	}
	if err := s.wait(ctx, name); err != nil {
		return drainResult{}, err
	}
	return drainResult{name: name, backlog: backlog, elapsed: time.Since(start), requests: requests.Load()}, nil
}

// drainOneAtATime drains a backlog the way wire-server's federator sends
// notifications to a remote: one consumer per remote with one message in
// flight (RabbitMQ prefetch 1), each sent as its own request and
// acknowledged before the next is fetched.
func (w *notifyWorld) drainOneAtATime(ctx context.Context, cfg NotifyConfig, backlog int) (drainResult, error) {
	s := newSink(backlog)
	p, proxy, err := w.startProxied(pairOptions{noFederators: true}, s, cfg.RTT)
	if err != nil {
		return drainResult{}, err
	}
	defer p.close()
	stream, err := waitStream(ctx, p.a, true)
	if err != nil {
		return drainResult{}, err
	}
	if err := publishN(ctx, p.a, []string{domainB}, backlog, cfg.BodySize); err != nil {
		return drainResult{}, err
	}
	filter, _ := p.a.Subjects.NotifyDomain(domainB)
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "one-at-a-time", FilterSubject: filter,
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, AckWait: time.Minute})
	if err != nil {
		return drainResult{}, err
	}
	client, err := mtlsClient(p.a, w.ca)
	if err != nil {
		return drainResult{}, err
	}
	defer client.CloseIdleConnections()
	base := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(proxy.port())))
	start := time.Now()
	for range backlog {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			return drainResult{}, fmt.Errorf("one at a time: fetch: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+contract.Path(notifyComponent, notifyRPC), bytes.NewReader(m.Data()))
		if err != nil {
			return drainResult{}, err
		}
		req.Host = infraB
		id := m.Headers().Get(contract.HeaderID)
		req.Header.Set(contract.HTTPOriginDomain, domainA)
		req.Header.Set(contract.HTTPContentType, contract.ContentTypeJSON)
		req.Header.Set(contract.HTTPRequestID, id)
		req.Header.Set(contract.HTTPNotificationID, id)
		resp, err := client.Do(req)
		if err != nil {
			return drainResult{}, fmt.Errorf("one at a time: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return drainResult{}, fmt.Errorf("one at a time: status %d", resp.StatusCode)
		}
		if err := m.DoubleAck(ctx); err != nil {
			return drainResult{}, fmt.Errorf("one at a time: ack: %w", err)
		}
	}
	if err := s.wait(ctx, "one at a time"); err != nil {
		return drainResult{}, err
	}
	return drainResult{name: "one at a time (wire-server model)", backlog: backlog, elapsed: time.Since(start), requests: int64(backlog)}, nil
}

// mtlsClient is an HTTP/2 client with a's certificate that trusts ca, for
// B's ingress (server name infraB).
func mtlsClient(a *fedtest.Backend, ca *testbed.CA) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(a.Files.Cert, a.Files.Key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tr := &http2.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: infraB, MinVersion: tls.VersionTLS13}}
	return &http.Client{Transport: tr}, nil
}

// throughput measures notifications to cfg.Destinations domains, all
// served by B's ingress, delivered by two federator workers of A: the
// end-to-end rate while components publish (published, delivered: from
// the first publish), and the drain of a backlog of the same size spread
// over the destinations (drain).
func (w *notifyWorld) throughput(ctx context.Context, cfg NotifyConfig) (published, delivered, drain time.Duration, err error) {
	for phase := range 2 {
		if err := w.throughputPhase(ctx, cfg, phase, &published, &delivered, &drain); err != nil {
			return 0, 0, 0, err
		}
	}
	return published, delivered, drain, nil
}

// throughputPhase is one phase of throughput: 0 while published, 1 a
// backlog drained.
func (w *notifyWorld) throughputPhase(ctx context.Context, cfg NotifyConfig, phase int, published, delivered, drain *time.Duration) error {
	s := newSink(cfg.Throughput)
	p, proxy, err := w.startProxied(pairOptions{federators: 2, envA: map[string]string{"FED_NOTIFY_RETRY_MIN": "1h", "FED_NOTIFY_RETRY_MAX": "1h"}}, s, 0)
	if err != nil {
		return err
	}
	defer p.close()
	targets := make([]string, cfg.Destinations)
	for i := range targets {
		targets[i] = fmt.Sprintf("d%03d.example.net", i)
		w.dns.SetSRV(targets[i], 3600, testbed.SRVRecord{Target: infraB, Port: proxy.port(), Priority: 10, Weight: 5})
	}
	if _, err := waitStream(ctx, p.a, false); err != nil {
		return err
	}
	if phase == 0 { // components publish, fedbus delivers meanwhile
		start := time.Now()
		if err := publishN(ctx, p.a, targets, cfg.Throughput, cfg.BodySize); err != nil {
			return err
		}
		*published = time.Since(start)
		if err := s.wait(ctx, "throughput"); err != nil {
			return err
		}
		*delivered = time.Since(start)
		return nil
	}
	// a backlog for every destination, then the remote comes back
	proxy.setOpen(false)
	if err := publishN(ctx, p.a, targets, cfg.Throughput, cfg.BodySize); err != nil {
		return err
	}
	store, err := notify.OpenStore(ctx, p.a.JetStream, notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 1)
	if err != nil {
		return err
	}
	if _, err := waitFailing(ctx, store, len(targets)); err != nil {
		return err
	}
	proxy.setOpen(true)
	start := time.Now()
	for _, t := range targets { // as fedctl notifications retry
		if _, err := store.RetryNow(ctx, t); err != nil {
			return err
		}
	}
	if err := s.wait(ctx, "throughput drain"); err != nil {
		return err
	}
	*drain = time.Since(start)
	return nil
}

// latency publishes notifications one at a time, each once the previous
// one was handled, and returns each one's time from publish to handler.
func (w *notifyWorld) latency(ctx context.Context, cfg NotifyConfig) ([]time.Duration, error) {
	const warm = 20
	s := newSink(cfg.LatencySamples + warm)
	s.last = make(chan time.Time, 1)
	p, err := w.startPair(pairOptions{}, s)
	if err != nil {
		return nil, err
	}
	defer p.close()
	if _, err := waitStream(ctx, p.a, false); err != nil {
		return nil, err
	}
	body := []byte(`"x"`)
	notifier := p.a.Notifier("/" + notifyComponent)
	var out []time.Duration
	for i := range cfg.LatencySamples + warm {
		start := time.Now()
		if _, err := notifier.Notify(ctx, domainB, notifyComponent, notifyRPC, body); err != nil {
			return nil, err
		}
		select {
		case at := <-s.last:
			if i >= warm {
				out = append(out, at.Sub(start))
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
			return nil, errors.New("latency: a notification did not arrive within 10s")
		}
		time.Sleep(5 * time.Millisecond) // nothing backed up: the next goes alone
	}
	return out, nil
}

// waitFailing waits until n destinations have a failing state, and
// returns how many have.
func waitFailing(ctx context.Context, store *notify.Store, n int) (int, error) {
	for {
		states, err := store.States(ctx)
		if err != nil {
			return 0, err
		}
		if len(states) >= n {
			return len(states), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitingCost is the resources run.
type waitingCost struct {
	destinations     int
	took             time.Duration // until every destination had failed once
	before, after    snapshot      // this process (A, B and their NATS servers)
	consumers        int           // on A's notification stream
	leases, states   int
	consumersSettled int // consumers, leases and goroutines 10 s later
	leasesSettled    int
	settled          snapshot
}

// waiting publishes one notification to each of cfg.Waiting destinations
// that cannot be reached (connections refused), waits until each failed
// once (its next attempt 1 to 2 minutes away, as at the start of a long
// outage), and measures what they cost.
func (w *notifyWorld) waiting(ctx context.Context, cfg NotifyConfig) (waitingCost, error) {
	res := waitingCost{destinations: cfg.Waiting}
	p, proxy, err := w.startProxied(pairOptions{envA: map[string]string{"FED_NOTIFY_RETRY_MIN": "2m", "FED_NOTIFY_RETRY_MAX": "5m",
		"FED_NOTIFY_SCAN_INTERVAL": "1m"}}, newSink(1), 0)
	if err != nil {
		return res, err
	}
	defer p.close()
	proxy.setOpen(false)
	targets := make([]string, cfg.Waiting)
	for i := range targets {
		targets[i] = fmt.Sprintf("w%05d.example.net", i)
		w.dns.SetSRV(targets[i], 3600, testbed.SRVRecord{Target: infraB, Port: proxy.port(), Priority: 10, Weight: 5})
	}
	stream, err := waitStream(ctx, p.a, false)
	if err != nil {
		return res, err
	}
	store, err := notify.OpenStore(ctx, p.a.JetStream, notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 1)
	if err != nil {
		return res, err
	}
	measure := func(snap *snapshot) error {
		runtime.GC()
		var err error
		*snap, err = takeSnapshot()
		return err
	}
	if err := measure(&res.before); err != nil {
		return res, err
	}
	start := time.Now()
	if err := publishN(ctx, p.a, targets, cfg.Waiting, cfg.BodySize); err != nil {
		return res, err
	}
	if res.states, err = waitFailing(ctx, store, len(targets)); err != nil {
		return res, err
	}
	res.took = time.Since(start)
	count := func() (consumers, leases int, err error) {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		holders, err := store.Holders(ctx)
		return info.State.Consumers, len(holders), err
	}
	if err := measure(&res.after); err != nil {
		return res, err
	}
	if res.consumers, res.leases, err = count(); err != nil {
		return res, err
	}
	select {
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if err := measure(&res.settled); err != nil {
		return res, err
	}
	if res.consumersSettled, res.leasesSettled, err = count(); err != nil {
		return res, err
	}
	return res, nil
}

// RunNotify runs the notification benchmark and prints its tables.
func RunNotify(ctx context.Context, cfg NotifyConfig) error {
	if cfg.Backlog <= 0 || cfg.RTT < 0 || cfg.Destinations <= 0 || cfg.Throughput <= 0 || cfg.LatencySamples <= 0 {
		return errors.New("notifications: backlog, destinations, throughput and latency samples must be positive")
	}
	if cfg.BaselineBacklog <= 0 {
		cfg.BaselineBacklog = cfg.Backlog
	}
	dir, err := os.MkdirTemp("", "fedbench-notify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := testbed.NewCA("fedbench notifications CA")
	if err != nil {
		return err
	}
	dns, err := testbed.NewDNS()
	if err != nil {
		return err
	}
	if err := dns.Start(); err != nil {
		return err
	}
	defer func() { _ = dns.Stop() }()
	w := &notifyWorld{ca: ca, dns: dns, dir: dir, log: slog.New(slog.DiscardHandler)}
	log := cfg.Logger
	out := cfg.Out
	fmt.Fprintf(out, "notifications: drain of a backlog to one destination, %s added round trip (delaying proxy on loopback), %d-byte bodies\n", cfg.RTT, cfg.BodySize)
	var results []drainResult
	run := func(r drainResult, err error) error {
		if err != nil {
			return err
		}
		log.Info("drained", "run", r.name, "backlog", r.backlog, "elapsed", r.elapsed)
		results = append(results, r)
		return nil
	}
	if err := run(w.drainOneAtATime(ctx, cfg, cfg.BaselineBacklog)); err != nil {
		return err
	}
	if err := run(w.drainFedbus(ctx, cfg, "fedbus, remote without batches", 100, cfg.BaselineBacklog, false)); err != nil {
		return err
	}
	for _, b := range cfg.BatchSizes {
		if err := run(w.drainFedbus(ctx, cfg, fmt.Sprintf("fedbus, batches of %d", b), b, cfg.Backlog, true)); err != nil {
			return err
		}
	}
	base := results[0].rate()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tbacklog\tdrain time\tnotifications/s\trequests\tdrain of "+strconv.Itoa(cfg.Backlog)+"\tvs one at a time\t")
	for _, r := range results {
		full := time.Duration(float64(cfg.Backlog) / r.rate() * float64(time.Second))
		scaled := ""
		if r.backlog != cfg.Backlog {
			scaled = " (at this rate)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%d\t%s%s\t%.1fx\t\n", r.name, r.backlog, r.elapsed.Round(time.Millisecond), r.rate(), r.requests,
			full.Round(100*time.Millisecond), scaled, r.rate()/base)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pub, del, drain, err := w.throughput(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nnotifications: throughput, %d notifications to %d destinations (one remote ingress, no added delay), two federator workers\n", cfg.Throughput, cfg.Destinations)
	fmt.Fprintf(out, "  while published (16 publishers): published in %s (%.0f/s), all delivered after %s: %.0f notifications/s end to end\n",
		pub.Round(time.Millisecond), float64(cfg.Throughput)/pub.Seconds(), del.Round(time.Millisecond), float64(cfg.Throughput)/del.Seconds())
	fmt.Fprintf(out, "  a backlog over the %d destinations, drained in %s: %.0f notifications/s\n", cfg.Destinations, drain.Round(time.Millisecond), float64(cfg.Throughput)/drain.Seconds())
	lat, err := w.latency(ctx, cfg)
	if err != nil {
		return err
	}
	p50, p90, p99 := latencySummary(lat)
	fmt.Fprintf(out, "\nnotifications: latency from publish to the remote component's handler, nothing backed up (%d, one at a time)\n", len(lat))
	fmt.Fprintf(out, "  p50 %s  p90 %s  p99 %s\n", ms(p50), ms(p90), ms(p99))
	if cfg.Waiting <= 0 {
		return nil
	}
	wc, err := w.waiting(ctx, cfg)
	if err != nil {
		return err
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	heap := int64(wc.after.HeapInuse) - int64(wc.before.HeapInuse)
	fmt.Fprintf(out, "\nnotifications: resources, %d unreachable destinations with one notification each; every one failed once after %s and waits for its next attempt\n",
		wc.destinations, wc.took.Round(time.Second))
	fmt.Fprintf(out, "  this process (A and B with their NATS servers): goroutines %d -> %d (10 s later %d), heap in use %.1f -> %.1f MiB (10 s later %.1f): %+d bytes per destination\n",
		wc.before.Goroutines, wc.after.Goroutines, wc.settled.Goroutines, mib(wc.before.HeapInuse), mib(wc.after.HeapInuse), mib(wc.settled.HeapInuse), heap/int64(wc.destinations))
	fmt.Fprintf(out, "  NATS: %d state keys; consumers %d, leases %d (10 s later %d and %d)\n",
		wc.states, wc.consumers, wc.leases, wc.consumersSettled, wc.leasesSettled)
	return nil
}
