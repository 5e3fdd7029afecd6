package natsperm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/ctl"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/testbed"
)

const (
	confPath = "../../deploy/nats/fedbus.conf"
	bucket   = "fedbus"
	// waitFor bounds every wait for something that must happen.
	waitFor = 5 * time.Second
)

// passwords of the password users of fedbus.conf; cargohold is the NKey
// user (its seed is testdata/cargohold.nk).
var passwords = map[string]string{
	"brig":      "brig-example-password",
	"galley":    "galley-example-password",
	"federator": "federator-example-password",
	"ingress":   "ingress-example-password",
	"fedctl":    "fedctl-example-password",
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer runs a NATS server from fedbus.conf, on a free loopback port
// with its JetStream store in a temporary directory.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("process %s: %v", confPath, err)
	}
	if !opts.JetStream {
		t.Fatalf("%s does not enable JetStream, which the KV bucket needs", confPath)
	}
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.NoLog = true
	opts.NoSigs = true
	opts.StoreDir = t.TempDir()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s
}

// client is a connection as one user of fedbus.conf, with its
// asynchronous errors (permission violations) collected.
type client struct {
	*nats.Conn
	user string
	errs chan error
}

// connect connects as user the way a fedbus process does: the FED_NATS_*
// settings through config.NATSAuth.Options, then bus.Connect.
func connect(t testing.TB, s *server.Server, user string) *client {
	t.Helper()
	auth := config.NATSAuth{User: user, Password: passwords[user], InboxPrefix: "_INBOX_" + user}
	if user == "cargohold" {
		auth = config.NATSAuth{NKeySeed: "testdata/cargohold.nk", InboxPrefix: "_INBOX_cargohold"}
	}
	opts, err := auth.Options()
	if err != nil {
		t.Fatalf("options for %s: %v", user, err)
	}
	c := &client{user: user, errs: make(chan error, 64)}
	opts = append(opts, nats.Timeout(30*time.Second))
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case c.errs <- err:
		default:
		}
	}))
	nc, err := bus.Connect(s.ClientURL(), "natsperm-"+user, discard, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

// wantViolation waits for the server's permissions violation of kind
// ("Publish" or "Subscription") on subject.
func (c *client) wantViolation(t testing.TB, kind, subject string) {
	t.Helper()
	c.waitViolation(t, fmt.Sprintf("Permissions Violation for %s to %q", kind, subject))
}

// wantViolationPrefix is wantViolation for a subject that starts with
// prefix.
func (c *client) wantViolationPrefix(t testing.TB, kind, prefix string) {
	t.Helper()
	c.waitViolation(t, strings.TrimSuffix(fmt.Sprintf("Permissions Violation for %s to %q", kind, prefix), `"`))
}

// waitViolation waits for a permissions violation whose text contains
// want.
func (c *client) waitViolation(t testing.TB, want string) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	var got []string
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return
			}
			got = append(got, err.Error())
		case <-timer.C:
			t.Fatalf("%s: no %q within %v (errors seen: %q)", c.user, want, waitFor, got)
		}
	}
}

// noErrors fails if the server reported anything to c (call it after a
// flush).
func (c *client) noErrors(t testing.TB) {
	t.Helper()
	for {
		select {
		case err := <-c.errs:
			t.Errorf("%s: unexpected async error: %v", c.user, err)
		default:
			return
		}
	}
}

// flush makes a round trip to the server on each connection in order:
// after flushing the publisher and then the subscribers, every message the
// server routed to a subscriber is in its channel.
func flush(t testing.TB, cs ...*client) {
	t.Helper()
	for _, c := range cs {
		if err := c.FlushTimeout(waitFor); err != nil {
			t.Fatalf("flush %s: %v", c.user, err)
		}
	}
}

// chanSub subscribes subject (in queue when not empty) into a channel and
// flushes, so that the server has processed the subscription (or refused
// it) when it returns.
func chanSub(t testing.TB, c *client, subject, queue string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 16)
	var (
		sub *nats.Subscription
		err error
	)
	if queue == "" {
		sub, err = c.ChanSubscribe(subject, ch)
	} else {
		sub, err = c.ChanQueueSubscribe(subject, queue, ch)
	}
	if err != nil {
		t.Fatalf("%s: subscribe %s: %v", c.user, subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	flush(t, c)
	return ch
}

// wantNone fails when ch holds a message.
func wantNone(t testing.TB, who string, ch chan *nats.Msg) {
	t.Helper()
	if n := len(ch); n != 0 {
		m := <-ch
		t.Errorf("%s received %d message(s), first on %s", who, n, m.Subject)
	}
}

// wantOne waits for a message on ch.
func wantOne(t testing.TB, who string, ch chan *nats.Msg) *nats.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitFor):
		t.Fatalf("%s received nothing within %v", who, waitFor)
		return nil
	}
}

func request(data string) bus.Event {
	return bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, Data: []byte(data)}
}

func inbound(origin, data string) bus.Event {
	return bus.Event{ID: bus.NewID(), Source: "//" + origin + "/brig", Type: contract.TypeRequest, OriginDomain: origin, Data: []byte(data)}
}

func ctxFor(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	t.Cleanup(cancel)
	return ctx
}

// serveFederator answers every fed.out request like a federator worker
// would: a fedbus.response echoing the request body.
func serveFederator(t testing.TB, fed *client) {
	t.Helper()
	sub, err := fed.QueueSubscribe("fed.out.>", "federator", func(m *nats.Msg) {
		ev, err := bus.Decode(m)
		if err != nil {
			return
		}
		_ = m.RespondMsg(bus.Reply(ev, "/federator", ev.Data).Message(m.Reply))
	})
	if err != nil {
		t.Fatalf("federator subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	flush(t, fed)
	fed.noErrors(t)
}

// serveEcho serves component's inbound requests on c with bus.Serve; the
// reply says who answered, for which origin and rpc.
func serveEcho(t testing.TB, c *client, component string) {
	t.Helper()
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := bus.Serve(ctx, c.Conn, subjects, component, func(_ context.Context, r *bus.Request) ([]byte, error) {
		return json.Marshal(map[string]string{"by": component, "origin": r.Origin, "rpc": r.RPC, "body": string(r.Body)})
	}, discard)
	if err != nil {
		cancel()
		t.Fatalf("serve %s: %v", component, err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitFor)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
	})
	c.noErrors(t)
}

func createBucket(t testing.TB, s *server.Server) jetstream.KeyValue {
	t.Helper()
	admin := connect(t, s, "fedctl")
	js, err := jetstream.New(admin.Conn)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctxFor(t), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatalf("fedctl creates bucket %s: %v", bucket, err)
	}
	return kv
}

func wantNoKey(t testing.TB, kv jetstream.KeyValue, key string) {
	t.Helper()
	if e, err := kv.Get(ctxFor(t), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("key %s: got %v, %v; want ErrKeyNotFound", key, e, err)
	}
}

func TestPermissions(t *testing.T) {
	s := startServer(t)
	adminKV := createBucket(t, s)
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		t.Fatal(err)
	}

	// Threat: a compromised component reads another component's inbound
	// requests (users' data of another service).
	t.Run("brig cannot subscribe to galley's inbound requests", func(t *testing.T) {
		brig, galley, ing := connect(t, s, "brig"), connect(t, s, "galley"), connect(t, s, "ingress")
		plain := chanSub(t, brig, "fed.in.galley.>", "")
		brig.wantViolation(t, "Subscription", "fed.in.galley.>")
		queued := chanSub(t, brig, "fed.in.galley.>", "galley")
		brig.wantViolation(t, "Subscription", "fed.in.galley.>")
		wide := chanSub(t, brig, "fed.in.>", "brig")
		brig.wantViolation(t, "Subscription", "fed.in.>")
		control := chanSub(t, galley, "fed.in.galley.>", "galley")

		if err := ing.PublishMsg(inbound("a.example.com", `"x"`).Message("fed.in.galley.x.a.example.com")); err != nil {
			t.Fatal(err)
		}
		flush(t, ing, galley, brig)
		wantOne(t, "galley", control)
		for _, ch := range []chan *nats.Msg{plain, queued, wide} {
			wantNone(t, "brig", ch)
		}
		ing.noErrors(t)
	})

	// Threat: a compromised component poses as the ingress and sends a
	// request with an origin domain of its choice to another component.
	t.Run("brig cannot pose as the ingress", func(t *testing.T) {
		brig, galley := connect(t, s, "brig"), connect(t, s, "galley")
		got := chanSub(t, galley, "fed.in.galley.>", "galley")
		const subject = "fed.in.galley.x.a.example.com"
		if err := brig.PublishMsg(inbound("a.example.com", `"x"`).Message(subject)); err != nil {
			t.Fatal(err)
		}
		brig.wantViolation(t, "Publish", subject)
		// a request (with a reply inbox) is refused the same way: the
		// server drops it, so it can only time out
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := bus.Exchange(ctx, brig.Conn, inbound("a.example.com", `"x"`).Message(subject)); !errors.Is(err, contract.ErrTimeout) {
			t.Errorf("brig's request on fed.in: got %v, want a timeout", err)
		}
		brig.wantViolation(t, "Publish", subject)
		flush(t, brig, galley)
		wantNone(t, "galley", got)
	})

	// Threat: a compromised component reads the outbound requests of the
	// others (or steals them from the federator's queue group).
	t.Run("brig cannot read outbound requests", func(t *testing.T) {
		brig, galley, fed := connect(t, s, "brig"), connect(t, s, "galley"), connect(t, s, "federator")
		plain := chanSub(t, brig, "fed.out.>", "")
		brig.wantViolation(t, "Subscription", "fed.out.>")
		queued := chanSub(t, brig, "fed.out.>", "federator")
		brig.wantViolation(t, "Subscription", "fed.out.>")
		control := chanSub(t, fed, "fed.out.>", "federator")

		if err := galley.PublishMsg(request(`"x"`).Message("fed.out.galley.x.b.example.com")); err != nil {
			t.Fatal(err)
		}
		flush(t, galley, fed, brig)
		wantOne(t, "federator", control)
		wantNone(t, "brig", plain)
		wantNone(t, "brig", queued)
		galley.noErrors(t)
	})

	// Threat: a compromised component reads the replies meant for other
	// users (remote responses to galley, galley's answers to the ingress).
	t.Run("brig cannot read other users' replies", func(t *testing.T) {
		brig := connect(t, s, "brig")
		for _, subject := range []string{"_INBOX.>", "_INBOX_galley.>", "_INBOX_ingress.>", "_INBOX_federator.>", ">"} {
			chanSub(t, brig, subject, "")
			brig.wantViolation(t, "Subscription", subject)
		}
	})

	// Threat: a component writes the federation config or uses JetStream.
	t.Run("brig cannot touch the bucket", func(t *testing.T) {
		brig := connect(t, s, "brig")
		for _, subject := range []string{"$KV.fedbus.remotes.evil.example.com", "$JS.API.STREAM.INFO.KV_fedbus", "$JS.API.STREAM.DELETE.KV_fedbus"} {
			if err := brig.Publish(subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			brig.wantViolation(t, "Publish", subject)
		}
		chanSub(t, brig, "$KV.fedbus.>", "")
		brig.wantViolation(t, "Subscription", "$KV.fedbus.>")
		wantNoKey(t, adminKV, "remotes.evil.example.com")
	})

	t.Run("outbound request from brig is answered by the federator", func(t *testing.T) {
		brig, fed := connect(t, s, "brig"), connect(t, s, "federator")
		serveFederator(t, fed)
		body, err := bus.NewClient(brig.Conn, subjects, "/brig").Call(ctxFor(t), "b.example.com", "brig", "echo", []byte(`{"handle":"alice"}`))
		if err != nil {
			t.Fatalf("brig's call: %v", err)
		}
		if string(body) != `{"handle":"alice"}` {
			t.Errorf("reply body %s", body)
		}
		flush(t, brig, fed)
		brig.noErrors(t)
		fed.noErrors(t)
	})

	for _, component := range []string{"brig", "cargohold"} {
		t.Run("inbound request from the ingress is answered by "+component, func(t *testing.T) {
			comp, ing := connect(t, s, component), connect(t, s, "ingress")
			serveEcho(t, comp, component)
			subject, err := subjects.In(component, "echo", "a.example.com")
			if err != nil {
				t.Fatal(err)
			}
			// The ingress sends through a bus.Requester (its own inbox
			// subscription, batched publishes).
			req, err := bus.NewRequester(ing.Conn, nil, discard)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = req.Close() }()
			body, err := bus.Exchange(ctxFor(t), req, inbound("a.example.com", `"alice"`).Message(subject))
			if err != nil {
				t.Fatalf("ingress's request: %v", err)
			}
			var got map[string]string
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("reply %s: %v", body, err)
			}
			if got["by"] != component || got["origin"] != "a.example.com" || got["rpc"] != "echo" || got["body"] != `"alice"` {
				t.Errorf("reply %v", got)
			}
			flush(t, ing, comp)
			ing.noErrors(t)
			comp.noErrors(t)
		})
	}

	// Threat: a compromised federator injects inbound requests.
	t.Run("federator cannot publish inbound requests", func(t *testing.T) {
		fed, brig := connect(t, s, "federator"), connect(t, s, "brig")
		got := chanSub(t, brig, "fed.in.brig.>", "brig")
		const subject = "fed.in.brig.echo.a.example.com"
		if err := fed.PublishMsg(inbound("a.example.com", `"x"`).Message(subject)); err != nil {
			t.Fatal(err)
		}
		fed.wantViolation(t, "Publish", subject)
		flush(t, fed, brig)
		wantNone(t, "brig", got)
	})

	// Threat: a compromised component makes the federator publish a reply
	// (whose body a remote backend chooses) on a subject of its choice: an
	// inbound request subject, or a key of the federation config. This is
	// why the federator has no allow_responses but the components' inboxes.
	t.Run("federator cannot be made to reply on fed.in or the bucket", func(t *testing.T) {
		brig, fed, galley := connect(t, s, "brig"), connect(t, s, "federator"), connect(t, s, "galley")
		serveFederator(t, fed)
		got := chanSub(t, galley, "fed.in.galley.>", "galley")
		for _, reply := range []string{"fed.in.galley.x.a.example.com", "$KV.fedbus.remotes.evil.example.com"} {
			msg := request(`{"rules":{"brig":["*"]}}`).Message("fed.out.brig.echo.b.example.com")
			msg.Reply = reply
			if err := brig.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			fed.wantViolation(t, "Publish", reply)
		}
		flush(t, brig, fed, galley)
		wantNone(t, "galley", got)
		wantNoKey(t, adminKV, "remotes.evil.example.com")
		brig.noErrors(t)
	})

	t.Run("federator subscribes to fed.out only in its queue group", func(t *testing.T) {
		fed := connect(t, s, "federator")
		chanSub(t, fed, "fed.out.>", "")
		fed.wantViolation(t, "Subscription", "fed.out.>")
		chanSub(t, fed, "fed.out.>", "other")
		fed.wantViolation(t, "Subscription", "fed.out.>")
		chanSub(t, fed, "fed.in.>", "")
		fed.wantViolation(t, "Subscription", "fed.in.>")
	})

	// Threat: the internet-facing ingress, compromised, reads outbound
	// requests or other traffic.
	t.Run("ingress cannot subscribe to requests", func(t *testing.T) {
		ing, brig := connect(t, s, "ingress"), connect(t, s, "brig")
		out := chanSub(t, ing, "fed.out.>", "")
		ing.wantViolation(t, "Subscription", "fed.out.>")
		outQ := chanSub(t, ing, "fed.out.>", "federator")
		ing.wantViolation(t, "Subscription", "fed.out.>")
		in := chanSub(t, ing, "fed.in.brig.>", "brig")
		ing.wantViolation(t, "Subscription", "fed.in.brig.>")
		if err := brig.PublishMsg(request(`"x"`).Message("fed.out.brig.x.b.example.com")); err != nil {
			t.Fatal(err)
		}
		flush(t, brig, ing)
		wantNone(t, "ingress", out)
		wantNone(t, "ingress", outQ)
		wantNone(t, "ingress", in)
		if err := ing.Publish("fed.out.brig.x.b.example.com", nil); err != nil {
			t.Fatal(err)
		}
		ing.wantViolation(t, "Publish", "fed.out.brig.x.b.example.com")
	})

	for _, user := range []string{"federator", "ingress"} {
		t.Run(user+" watches the bucket", func(t *testing.T) {
			c := connect(t, s, user)
			ctx := ctxFor(t)
			js, err := jetstream.New(c.Conn)
			if err != nil {
				t.Fatal(err)
			}
			kv, err := js.KeyValue(ctx, bucket)
			if err != nil {
				t.Fatalf("%s opens bucket: %v", user, err)
			}
			w, err := kv.WatchAll(ctx)
			if err != nil {
				t.Fatalf("%s watches bucket: %v", user, err)
			}
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					_ = w.Stop()
				}
			})
			key := "remotes." + user + ".example.com"
			value := `{"rules":{"brig":["get-user-by-handle"]}}`
			if _, err := adminKV.Put(ctx, key, []byte(value)); err != nil {
				t.Fatalf("fedctl puts %s: %v", key, err)
			}
			for found := false; !found; {
				select {
				case e := <-w.Updates():
					// nil marks the end of the initial values
					found = e != nil && e.Key() == key && string(e.Value()) == value && e.Operation() == jetstream.KeyValuePut
				case <-ctx.Done():
					t.Fatalf("%s's watch did not see the put of %s", user, key)
				}
			}
			if e, err := kv.Get(ctx, key); err != nil || string(e.Value()) != value {
				t.Errorf("%s gets %s: %v", user, key, err)
			}
			if err := w.Stop(); err != nil {
				t.Errorf("stop watch: %v", err)
			}
			stopped = true
			flush(t, c)
			c.noErrors(t)
		})

		t.Run(user+" cannot write the bucket", func(t *testing.T) {
			c := connect(t, s, user)
			for _, subject := range []string{"$KV.fedbus.remotes.evil.example.com", "$JS.API.STREAM.DELETE.KV_fedbus", "$JS.API.STREAM.PURGE.KV_fedbus", "$JS.API.STREAM.CREATE.KV_other"} {
				if err := c.Publish(subject, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
				c.wantViolation(t, "Publish", subject)
			}
			wantNoKey(t, adminKV, "remotes.evil.example.com")
		})
	}

	t.Run("fedctl cannot publish or read requests", func(t *testing.T) {
		admin := connect(t, s, "fedctl")
		for _, subject := range []string{"fed.in.brig.x.a.example.com", "fed.out.brig.x.b.example.com"} {
			if err := admin.Publish(subject, nil); err != nil {
				t.Fatal(err)
			}
			admin.wantViolation(t, "Publish", subject)
		}
		chanSub(t, admin, "fed.>", "")
		admin.wantViolation(t, "Subscription", "fed.>")
	})

	t.Run("unknown credentials are refused", func(t *testing.T) {
		for _, opt := range []nats.Option{nats.UserInfo("brig", "wrong"), nats.UserInfo("nobody", "x"), nil} {
			opts := []nats.Option{nats.MaxReconnects(0)}
			if opt != nil {
				opts = append(opts, opt)
			}
			nc, err := nats.Connect(s.ClientURL(), opts...)
			if err == nil {
				nc.Close()
				t.Error("connected")
				continue
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("got %v, want an authorization violation", err)
			}
		}
	})
}

// TestSetupOpen starts the shared services of the fedbus binaries
// (setup.Open: NATS connection with the FED_NATS_* options, and the watch
// of the federation config bucket) as the federator and ingress users.
func TestSetupOpen(t *testing.T) {
	s := startServer(t)
	adminKV := createBucket(t, s)
	if _, err := adminKV.Put(ctxFor(t), "remotes.b.example.com", []byte(`{"rules":{"brig":["*"]}}`)); err != nil {
		t.Fatal(err)
	}
	ca, err := testbed.NewCA("natsperm CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	files, err := leaf.WriteFiles(t.TempDir(), "a", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	// the configuration as the binaries read it (defaults included)
	common := func(auth config.NATSAuth) config.Common {
		t.Helper()
		env := map[string]string{
			"FED_DOMAIN": "a.example.com", "FED_NATS_URL": s.ClientURL(), "FED_DNS_SERVER": "127.0.0.1:53",
			"FED_TLS_CERT": files.Cert, "FED_TLS_KEY": files.Key, "FED_TLS_CA": files.CA,
			"FED_KV_BUCKET": bucket, "FED_LOG_FORMAT": "text",
			"FED_NATS_USER": auth.User, "FED_NATS_PASSWORD": auth.Password,
			"FED_NATS_NKEY": auth.NKeySeed, "FED_NATS_INBOX_PREFIX": auth.InboxPrefix,
		}
		c := config.DefaultCommon()
		if err := config.Load(context.Background(), &c, envconfig.MapLookuper(env)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, user := range []string{"federator", "ingress"} {
		t.Run(user+" opens and watches the bucket", func(t *testing.T) {
			var logs testbed.LogBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			sh, err := setup.Open(common(config.NATSAuth{User: user, Password: passwords[user], InboxPrefix: "_INBOX_" + user}), user, log)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if err := sh.Close(ctxFor(t)); err != nil {
				t.Errorf("close: %v", err)
			}
			if l := logs.String(); strings.Contains(l, "Permissions Violation") || !strings.Contains(l, "federation config loaded") {
				t.Errorf("logs:\n%s", l)
			}
		})
	}
	// The example permissions without FED_NATS_INBOX_PREFIX: every
	// request would wait for its deadline (the replies are refused), so
	// the process refuses to start, naming the variable.
	for _, user := range []string{"federator", "ingress"} {
		t.Run(user+" without its inbox prefix is refused at start", func(t *testing.T) {
			sh, err := setup.Open(common(config.NATSAuth{User: user, Password: passwords[user]}), user, discard)
			if err == nil {
				_ = sh.Close(ctxFor(t))
				t.Fatal("opened")
			}
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "FED_NATS_INBOX_PREFIX is not set") || !strings.Contains(err.Error(), "_INBOX_"+user) {
				t.Errorf("got %v, want the permission violation with the fix", err)
			}
		})
	}
	t.Run("the services answer fedctl's discovery", func(t *testing.T) {
		c := common(config.NATSAuth{User: "ingress", Password: passwords["ingress"], InboxPrefix: "_INBOX_ingress"})
		sh, err := setup.Open(c, "ingress", discard)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sh.Close(ctxFor(t)) }()
		svc, err := setup.Announce(sh.NATS, "ingress", &c, nil)
		if err != nil {
			t.Fatalf("announce under the example permissions: %v", err)
		}
		defer func() { _ = svc.Stop() }()
		cfg := ctl.NewConfig()
		cfg.NATSURL = s.ClientURL()
		cfg.NATS = config.NATSAuth{User: "fedctl", Password: passwords["fedctl"], InboxPrefix: "_INBOX_fedctl"}
		var out, warn bytes.Buffer
		if err := ctl.Run(ctxFor(t), cfg, []string{"remotes", "add", "c.example.com"}, &out, &warn); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "watched by 1 running service(s): ingress of a.example.com (bucket fedbus)") || warn.Len() > 0 {
			t.Errorf("fedctl printed %q, warned %q", out.String(), warn.String())
		}
	})
	t.Run("a wrong password fails to open", func(t *testing.T) {
		sh, err := setup.Open(common(config.NATSAuth{User: "federator", Password: "wrong"}), "federator", discard)
		if err == nil {
			_ = sh.Close(ctxFor(t))
			t.Fatal("opened")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("got %v, want an authorization violation", err)
		}
	})
	t.Run("a bad seed file fails before connecting", func(t *testing.T) {
		sh, err := setup.Open(common(config.NATSAuth{NKeySeed: files.CA}), "federator", discard)
		if err == nil {
			_ = sh.Close(ctxFor(t))
			t.Fatal("opened")
		}
		if !strings.Contains(err.Error(), "FED_NATS_NKEY") {
			t.Errorf("got %v, want the variable named", err)
		}
	})
}

// TestFedctl runs fedctl's commands (ctl) as the fedctl user, and
// shows that the federator, which may read the bucket, cannot change it.
func TestFedctl(t *testing.T) {
	s := startServer(t)
	run := func(t testing.TB, user string, timeout time.Duration, args ...string) (string, error) {
		t.Helper()
		cfg := ctl.NewConfig()
		cfg.NATSURL = s.ClientURL()
		cfg.NATS = config.NATSAuth{User: user, Password: passwords[user], InboxPrefix: "_INBOX_" + user}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var out bytes.Buffer
		err := ctl.Run(ctx, cfg, args, &out, &out)
		return out.String(), err
	}
	if _, err := run(t, "fedctl", 2*waitFor, "remotes", "list"); !errors.Is(err, ctl.ErrNoBucket) {
		t.Fatalf("list before create: %v, want ErrNoBucket", err)
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"create"}, "created bucket fedbus"},
		{[]string{"remotes", "list"}, "0 remote(s)"},
		{[]string{"remotes", "add", "b.example.com", "-allow", "brig:*"}, "b.example.com"},
		{[]string{"rules", "set", "brig:get-user-by-handle"}, "get-user-by-handle"},
		{[]string{"remotes", "list"}, "b.example.com"},
		{[]string{"rules", "show"}, "get-user-by-handle"},
		{[]string{"remotes", "remove", "b.example.com"}, "removed b.example.com"},
		{[]string{"rules", "clear"}, "default rules"},
	} {
		t.Run("fedctl "+strings.Join(step.args, " ")+" prints "+step.want, func(t *testing.T) {
			out, err := run(t, "fedctl", 2*waitFor, step.args...)
			if err != nil {
				t.Fatalf("fedctl %v: %v", step.args, err)
			}
			if !strings.Contains(out, step.want) {
				t.Errorf("fedctl %v printed %q, want %q", step.args, out, step.want)
			}
		})
	}
	t.Run("fedctl without its inbox prefix is refused at once", func(t *testing.T) {
		cfg := ctl.NewConfig()
		cfg.NATSURL = s.ClientURL()
		cfg.NATS = config.NATSAuth{User: "fedctl", Password: passwords["fedctl"]}
		var out bytes.Buffer
		err := ctl.Run(ctxFor(t), cfg, []string{"remotes", "list"}, &out, &out)
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "FED_NATS_INBOX_PREFIX") {
			t.Errorf("got %v, want the permission violation naming FED_NATS_INBOX_PREFIX", err)
		}
	})
	t.Run("federator reads but cannot change the bucket", func(t *testing.T) {
		if _, err := run(t, "federator", 2*waitFor, "remotes", "list"); err != nil {
			t.Errorf("federator lists: %v", err)
		}
		// the put is refused by the server, so it can only time out
		if out, err := run(t, "federator", time.Second, "remotes", "add", "evil.example.com"); err == nil {
			t.Errorf("federator added a remote: %s", out)
		}
		out, err := run(t, "fedctl", 2*waitFor, "remotes", "list")
		if err != nil || strings.Contains(out, "evil.example.com") {
			t.Errorf("after the federator's add: %q, %v", out, err)
		}
	})
}

// TestObjects: the object store bucket of large and streamed bodies
// (FED_OBJECT_BUCKET=fedbus-objects, contract section 8) under the
// deployed permissions: the federator creates it and stores the remotes'
// answers; the components read (and delete) them and store their own
// streamed answers; the ingress reads the components' answers and deletes
// them once sent. The ingress cannot store objects, and fedctl cannot
// read them.
func TestObjects(t *testing.T) {
	s := startServer(t)
	users := map[string]*client{}
	objects := map[string]*bus.Objects{}
	for _, u := range []string{"federator", "ingress", "cargohold", "brig", "fedctl"} {
		c := connect(t, s, u)
		js, err := jetstream.New(c.Conn)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := bus.NewObjects(js, bus.ObjectsConfig{Bucket: "fedbus-objects"})
		if err != nil {
			t.Fatal(err)
		}
		users[u], objects[u] = c, objs
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640,000 bytes: three chunks
	put := func(t *testing.T, user string) bus.ObjectRef {
		t.Helper()
		ref, err := objects[user].Put(ctxFor(t), "application/octet-stream", bytes.NewReader(body), -1)
		if err != nil {
			t.Fatalf("%s stores: %v", user, err)
		}
		return ref
	}
	readAndDelete := func(t *testing.T, user string, ref bus.ObjectRef) {
		t.Helper()
		r, err := objects[user].Open(ctxFor(t), ref)
		if err != nil {
			t.Fatalf("%s opens: %v", user, err)
		}
		got, err := io.ReadAll(r)
		_ = r.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%s reads %d bytes: %v", user, len(got), err)
		}
		if err := objects[user].Delete(ctxFor(t), ref); err != nil {
			t.Fatalf("%s deletes: %v", user, err)
		}
	}
	t.Run("the federator creates the bucket and stores answers, cargohold reads and deletes them", func(t *testing.T) {
		readAndDelete(t, "cargohold", put(t, "federator"))
		flush(t, users["federator"], users["cargohold"])
		users["federator"].noErrors(t)
		users["cargohold"].noErrors(t)
	})
	for _, component := range []string{"cargohold", "brig"} {
		t.Run(component+" answers with a stream, the ingress reads and deletes it", func(t *testing.T) {
			readAndDelete(t, "ingress", put(t, component))
			flush(t, users[component], users["ingress"])
			users[component].noErrors(t)
			users["ingress"].noErrors(t)
		})
	}
	t.Run("the ingress cannot store objects", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := objects["ingress"].Put(ctx, "", bytes.NewReader(body), -1); err == nil {
			t.Fatal("the ingress stored an object")
		}
		users["ingress"].wantViolationPrefix(t, "Publish", "$O.fedbus-objects.C.")
	})
	t.Run("fedctl cannot read objects", func(t *testing.T) {
		ref := put(t, "federator")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if r, err := objects["fedctl"].Open(ctx, ref); err == nil {
			_ = r.Close()
			t.Fatal("fedctl opened an object")
		}
		users["fedctl"].wantViolation(t, "Publish", "$JS.API.STREAM.INFO.OBJ_fedbus-objects")
	})
}

// TestClusterExampleParses: deploy/nats/cluster.conf is a valid server
// configuration with a cluster of three, JetStream and lame-duck settings.
func TestClusterExampleParses(t *testing.T) {
	t.Setenv("SERVER_NAME", "nats-a-1")
	opts, err := server.ProcessConfigFile("../../deploy/nats/cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	if opts.ServerName != "nats-a-1" || opts.Cluster.Name != "a" || len(opts.Routes) != 3 || !opts.JetStream || opts.LameDuckDuration != 30*time.Second {
		t.Errorf("parsed %q, cluster %q with %d routes, JetStream %v, lame duck %v", opts.ServerName, opts.Cluster.Name, len(opts.Routes), opts.JetStream, opts.LameDuckDuration)
	}
}
