// Command demo runs two fedbus backends, a.example.com and b.example.com, in
// one process, each with its own embedded NATS server, federator and
// ingress, plus an in-process DNS server and a throwaway CA. It performs the
// seed's exact handle search (user 1 on A looks up "alice" on B), prints
// every hop and the profile found, then downloads a multi-megabyte asset
// from B's cargohold (stream-asset: it travels through the JetStream object
// store of both backends, contract section 8) and checks its SHA-256; then
// galley on A notifies B while B's ingress is down, and the notification
// arrives once B is back (contract section 6). It exits 0. With -serve it
// keeps running and prints how to send requests with the nats CLI.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/internal/version"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// profile is what the stand-in brig knows of a user.
type profile struct {
	ID     qualifiedID `json:"id"`
	Name   string      `json:"name"`
	Handle string      `json:"handle"`
	Accent int         `json:"accent_id"`
}

type qualifiedID struct {
	ID     string `json:"id"`
	Domain string `json:"domain"`
}

// printer prints hops in order with the time since the start.
type printer struct {
	mu    sync.Mutex
	start time.Time
	quiet atomic.Bool // the request hops are not printed
}

func (p *printer) hop(format string, args ...any) {
	if p.quiet.Load() {
		return
	}
	p.say(format, args...)
}

// say prints a line, even while the hops are quiet.
func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("%8.2fms  %s\n", float64(time.Since(p.start).Microseconds())/1000, fmt.Sprintf(format, args...))
}

func main() {
	serve := flag.Bool("serve", false, "keep running after the example and print how to send requests with the nats CLI")
	handle := flag.String("handle", "alice", "handle to search on b.example.com")
	assetSize := flag.Int64("asset-size", defaultAssetSize, "size in bytes of the asset downloaded from b.example.com's cargohold (0: none)")
	verbose := flag.Bool("v", false, "print the services' logs (JSON) to stderr")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Line("demo"))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *handle, *assetSize, *serve, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// defaultAssetSize is the size of the demo's asset: 12 MiB, twelve times
// what a NATS message carries.
const defaultAssetSize = 12 << 20

func run(ctx context.Context, handle string, assetSize int64, serve, verbose bool) error {
	p := &printer{start: time.Now()}
	log := slog.New(slog.DiscardHandler)
	if verbose {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	dir, err := os.MkdirTemp("", "fedbus-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := testbed.NewCA("fedbus demo CA")
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
	defer dns.Stop()
	fmt.Printf("fedbus demo: DNS on %s, CA %q\n", dns.Addr(), ca.Cert.Subject.CommonName)

	hook := func(id, step string) { p.hop("[A] %s", step) }
	// Notifications are retried within a second or two in the demo (the
	// defaults wait up to 5 minutes between attempts).
	fastRetry := map[string]string{"FED_NOTIFY_RETRY_MIN": "500ms", "FED_NOTIFY_RETRY_MAX": "1s"}
	a, err := fedtest.StartBackend(fedtest.BackendOptions{Domain: "a.example.com", InfraHost: "federator.a-infra.example.net",
		CA: ca, DNS: dns, Dir: dir, Strategy: "allow-list", AllowList: []string{"b.example.com"}, Logger: log, FederatorHook: hook, Env: fastRetry})
	if err != nil {
		return err
	}
	defer closeBackend(a)
	logB := log
	if !verbose {
		logB = slog.New(&hopHandler{p: p})
	}
	b, err := fedtest.StartBackend(fedtest.BackendOptions{Domain: "b.example.com", InfraHost: "federator.b-infra.example.net",
		CA: ca, DNS: dns, Dir: dir, Strategy: "allow-list", AllowList: []string{"a.example.com"}, Logger: logB})
	if err != nil {
		return err
	}
	defer closeBackend(b)
	for _, be := range []*fedtest.Backend{a, b} {
		fmt.Printf("backend %s: NATS %s, ingress https://%s (SRV _wire-server-federator._tcp.%s)\n", be.Domain, be.NATSURL, be.IngressAddr, be.Domain)
	}

	// Watchers show the messages on each bus (plain subscribers, outside
	// the queue groups).
	watch := func(be *fedtest.Backend, tag, subject, what string) error {
		_, err := be.NATS.Subscribe(subject, func(m *nats.Msg) {
			extra := ""
			if o := m.Header.Get(contract.HeaderOriginDomain); o != "" {
				extra = ", origin " + o + " verified by ingress"
			}
			p.hop("[%s] NATS: %s %s (ce-id %s%s)", tag, what, m.Subject, m.Header.Get(contract.HeaderID), extra)
		})
		return err
	}
	if err := watch(a, "A", a.Subjects.OutAll(), "component → federator on"); err != nil {
		return err
	}

	users := map[string]profile{
		"alice": {ID: qualifiedID{ID: "7a1c5e2b-4f0d-4c39-9d5e-0b1f6a2c9e11", Domain: "b.example.com"}, Name: "Alice", Handle: "alice", Accent: 3},
		"bob":   {ID: qualifiedID{ID: "1f3d9a77-2c4e-4b8a-8e6f-5d2c7b0a4f22", Domain: "b.example.com"}, Name: "Bob", Handle: "bob", Accent: 1},
	}
	brigB, err := bus.Serve(ctx, b.NATS, b.Subjects, "brig", func(_ context.Context, req *bus.Request) ([]byte, error) {
		var h string
		if err := json.Unmarshal(req.Body, &h); err != nil {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "body is not a JSON string handle")
		}
		u, ok := users[h]
		subject, _ := b.Subjects.In(req.Component, req.RPC, req.Origin)
		p.hop("[B] NATS: ingress → brig on %s (ce-id %s, origin %s verified by the ingress)", subject, req.ID, req.Origin)
		p.hop("[B] brig: get-user-by-handle %q from %s → found=%v", h, req.Origin, ok)
		if !ok {
			return []byte("null"), nil
		}
		return json.Marshal(u)
	}, log)
	if err != nil {
		return err
	}
	defer brigB.Shutdown(context.Background())
	if err := b.NATS.Flush(); err != nil {
		return err
	}
	if err := a.NATS.Flush(); err != nil {
		return err
	}

	fmt.Printf("\nuser 1 on a.example.com searches the exact handle %q on b.example.com:\n\n", handle)
	p.start = time.Now()
	body, _ := json.Marshal(handle)
	p.hop("[A] brig: request get-user-by-handle %s to b.example.com", body)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.Client("/brig").Call(cctx, "b.example.com", "brig", "get-user-by-handle", body)
	if err != nil {
		var fe *contract.Error
		if errors.As(err, &fe) {
			return fmt.Errorf("search failed: %s", fe.JSON())
		}
		return fmt.Errorf("search failed: %w", err)
	}
	p.hop("[A] brig: reply received (%d bytes)", len(resp))
	fmt.Printf("\nfound profile: %s\n", resp)
	if string(resp) == "null" {
		return fmt.Errorf("no user with handle %q", handle)
	}
	if assetSize > 0 {
		if err := downloadAsset(ctx, p, a, b, assetSize, log); err != nil {
			return err
		}
	}
	if err := downAndUp(ctx, p, a, b, body); err != nil {
		return err
	}
	if err := notificationStory(ctx, p, a, b, log); err != nil {
		return fmt.Errorf("notification: %w", err)
	}
	if !serve {
		return nil
	}
	fmt.Printf(`
serving until interrupted (Ctrl-C). Try, with the nats CLI (go install github.com/nats-io/natscli/nats@v0.5.0):

  nats --server %s request fed.out.brig.get-user-by-handle.b.example.com '"bob"' \
    -H ce-specversion:1.0 -H ce-id:req-1 -H ce-source:/cli -H ce-type:fedbus.request

  # an error: target not on the allow list
  nats --server %s request fed.out.brig.get-user-by-handle.c.example.com '"bob"' \
    -H ce-specversion:1.0 -H ce-id:req-2 -H ce-source:/cli -H ce-type:fedbus.request
`, a.NATSURL, a.NATSURL)
	<-ctx.Done()
	return nil
}

// downloadAsset serves cargohold on B (stream-asset: a generated asset of
// the requested size) and downloads an asset of size bytes from A, printing
// the hops; it fails unless the bytes' SHA-256 is the asset's.
func downloadAsset(ctx context.Context, p *printer, a, b *fedtest.Backend, size int64, log *slog.Logger) error {
	cargohold, err := bus.Serve(ctx, b.NATS, b.Subjects, "cargohold", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		r, err := asset.ParseRequest(req.Body)
		if err != nil {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "%v", err)
		}
		p.hop("[B] cargohold: stream-asset %s (%d bytes) for %s: streaming it into B's object store", r.Key, r.Size, req.Origin)
		return req.ReplyStream(ctx, contract.ContentTypeOctetStream, asset.New(r.Key, r.Size))
	}, log)
	if err != nil {
		return err
	}
	defer cargohold.Shutdown(context.Background())
	if err := b.NATS.Flush(); err != nil {
		return err
	}
	const key = "3-2-4c2b7e9a-demo-asset"
	fmt.Printf("\nuser 1 on a.example.com downloads the asset %s (%.1f MiB) from b.example.com's cargohold:\n\n", key, float64(size)/(1<<20))
	p.start = time.Now()
	p.hop("[A] cargohold: request stream-asset %s to b.example.com", key)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	body, err := a.Client("/cargohold").CallStream(cctx, "b.example.com", "cargohold", asset.RPC, asset.Body(key, size))
	if err != nil {
		var fe *contract.Error
		if errors.As(err, &fe) {
			return fmt.Errorf("download failed: %s", fe.JSON())
		}
		return fmt.Errorf("download failed: %w", err)
	}
	defer body.Close()
	p.hop("[A] cargohold: reply received: %s, %d bytes in the object %s of A's store", body.ContentType, body.Size, body.Object)
	h := asset.NewHasher()
	if _, err := io.Copy(h, body); err != nil {
		return fmt.Errorf("reading the asset: %w", err)
	}
	got, want := h.Sum(), asset.Digest(key, size)
	p.hop("[A] cargohold: read %d bytes from A's object store, chunk by chunk (%d KiB each)", h.Size(), bus.ChunkSize>>10)
	fmt.Printf("\nasset sha256 %x, %d bytes", got[:], h.Size())
	if got != want || h.Size() != size {
		fmt.Println(": MISMATCH")
		return fmt.Errorf("the asset arrived corrupt: sha256 %x, want %x", got[:], want[:])
	}
	fmt.Println(": byte-identical to the asset B generated")
	return nil
}

// downAndUp stops B's ingress while A keeps calling, then starts it
// again, and prints the remote status events A's federator publishes
// (contract section 7): one fedbus.remote.down, one fedbus.remote.up.
func downAndUp(ctx context.Context, p *printer, a, b *fedtest.Backend, body []byte) error {
	p.quiet.Store(true)
	defer p.quiet.Store(false)
	events := make(chan bus.Event, 4)
	sub, err := a.NATS.Subscribe(a.Subjects.StatusAll(), func(m *nats.Msg) {
		if ev, err := bus.Decode(m); err == nil {
			events <- ev
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	fmt.Printf("\nremote status: b.example.com's ingress stops, then comes back; A's components subscribe to %s:\n\n", a.Subjects.StatusAll())
	p.start = time.Now()
	call := func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := a.Client("/brig").Call(cctx, "b.example.com", "brig", "get-user-by-handle", body)
		return err
	}
	// await calls until the next status event and prints it.
	await := func(what string) error {
		calls, failed := 0, 0
		deadline := time.After(15 * time.Second)
		for {
			select {
			case ev := <-events:
				subject, _ := a.Subjects.Status("b.example.com")
				p.say("[A] NATS: %s on %s: %s (after %d calls, %d failed)", ev.Type, subject, ev.Data, calls, failed)
				return nil
			case <-deadline:
				return fmt.Errorf("no %s event", what)
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
			calls++
			if err := call(); err != nil {
				failed++
				if failed == 1 {
					p.say("[A] brig: call failed: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.StopIngress(sctx); err != nil {
		return err
	}
	p.say("[B] ingress stopped")
	if err := await("fedbus.remote.down"); err != nil {
		return err
	}
	if err := b.StartIngress(); err != nil {
		return err
	}
	p.say("[B] ingress started again")
	return await("fedbus.remote.up")
}

// hopHandler is a slog handler that prints the ingress's "request served"
// lines as hops and drops everything else.
type hopHandler struct {
	p     *printer
	attrs []slog.Attr
}

func (h *hopHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *hopHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request served" {
		return nil
	}
	vals := map[string]string{}
	for _, a := range h.attrs {
		vals[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { vals[a.Key] = a.Value.String(); return true })
	if obj := vals["object"]; obj != "" {
		h.p.hop("[B] ingress: answered %s to %s with the object %s (%s bytes, streamed chunk by chunk, then deleted), %sms", vals["status"], vals["origin"], obj, vals["bytes"], vals["duration_ms"])
		return nil
	}
	h.p.hop("[B] ingress: answered %s to %s (its client certificate %s is an SRV target of %s), %sms", vals["status"], vals["origin"], vals["san"], vals["origin"], vals["duration_ms"])
	return nil
}

func (h *hopHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &hopHandler{p: h.p, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...)}
}

func (h *hopHandler) WithGroup(string) slog.Handler { return h }

func closeBackend(b *fedtest.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.Close(ctx)
}

// notificationStory: galley on A notifies B that a member joined while B's
// ingress is down; A keeps the notification and retries; B comes back and
// galley on B gets it, once.
func notificationStory(ctx context.Context, p *printer, a, b *fedtest.Backend, log *slog.Logger) error {
	fmt.Printf("\ngalley on a.example.com notifies b.example.com that a member joined, while B's ingress is down:\n\n")
	var mu sync.Mutex
	var got []*bus.Notification
	arrived := make(chan struct{}, 1)
	galleyB, err := bus.ServeNotifications(ctx, b.JetStream, b.Subjects, "galley", func(_ context.Context, n *bus.Notification) error {
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
		p.hop("[B] galley: notification %s from %s (id %s, body %s, handed over %d time(s)) → acknowledged", n.RPC, n.Origin, n.ID, n.Body, n.Delivery)
		select {
		case arrived <- struct{}{}:
		default:
		}
		return nil
	}, bus.NotificationOptions{Logger: log})
	if err != nil {
		return err
	}
	defer galleyB.Shutdown(context.Background())
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.StopIngress(sctx); err != nil {
		return err
	}
	p.start = time.Now()
	p.hop("[B] ingress: down (its port is closed)")
	for { // the federator of A creates the stream at start
		if _, err := a.JetStream.Stream(sctx, contract.DefaultNotifyStream); err == nil {
			break
		}
		select {
		case <-sctx.Done():
			return sctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	body := []byte(`{"conversation":"c-42","user":{"id":"7a1c5e2b","domain":"b.example.com"}}`)
	id, err := a.Notifier("/galley").Notify(sctx, "b.example.com", "galley", "on-member-join", body)
	if err != nil {
		return err
	}
	p.hop("[A] galley: notification on-member-join for b.example.com stored in JetStream (%s, fed.notify.galley.on-member-join.b.example.com, id %s)", contract.DefaultNotifyStream, id)
	store, err := notify.OpenStore(sctx, a.JetStream, notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 1)
	if err != nil {
		return err
	}
	seen := 0
	for seen < 2 {
		st, err := store.State(sctx, "b.example.com")
		if err != nil {
			return err
		}
		if st.Attempts > seen {
			seen = st.Attempts
			p.hop("[A] federator: attempt %d failed (%s); the notification stays, next attempt in %s", st.Attempts, st.LastLabel, time.Until(st.NextAttempt).Round(10*time.Millisecond))
		}
		select {
		case <-sctx.Done():
			return sctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := b.StartIngress(); err != nil {
		return err
	}
	p.hop("[B] ingress: back")
	select {
	case <-arrived:
	case <-sctx.Done():
		return fmt.Errorf("the notification did not arrive: %w", sctx.Err())
	}
	time.Sleep(500 * time.Millisecond) // a second copy would show by now
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].ID != id {
		return fmt.Errorf("galley on B got %d notifications, want the one", len(got))
	}
	fmt.Printf("\nthe notification arrived once, after %d failed attempt(s).\n", seen)
	return nil
}
