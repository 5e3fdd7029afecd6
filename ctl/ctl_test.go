package ctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

func startNATS(t *testing.T) *server.Server {
	t.Helper()
	srv, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// fakeService answers NATS service discovery as a running fedbus service
// would (setup announces the same metadata).
func fakeService(t *testing.T, url, role, bucket, components string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := micro.AddService(nc, micro.Config{Name: contract.ServiceName, Version: "0.0.0-test", Metadata: map[string]string{
		contract.MetaRole: role, contract.MetaDomain: "a.example.com", contract.MetaBucket: bucket, contract.MetaComponents: components,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

type step struct {
	name string
	args string
	want []string // substrings of the output
	warn string   // substring of the warnings ("" for none)
	err  error
}

func runSteps(t *testing.T, cfg Config, steps []step) {
	t.Helper()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var out, warn bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Run(ctx, cfg, strings.Fields(st.args), &out, &warn)
			if st.err != nil {
				if err == nil || st.err != errAny && !errors.Is(err, st.err) {
					t.Fatalf("got %v (output %q), want %v", err, out.String(), st.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range st.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
			switch {
			case st.warn == "" && warn.Len() > 0:
				t.Errorf("warned %q", warn.String())
			case st.warn != "" && !strings.Contains(warn.String(), st.warn):
				t.Errorf("warnings %q lack %q", warn.String(), st.warn)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestCommands(t *testing.T) {
	srv := startNATS(t)
	cfg := NewConfig()
	cfg.NATSURL = srv.ClientURL()
	noService := "no running federator or ingress answers"
	runSteps(t, cfg, []step{
		{name: "list before the bucket exists", args: "remotes list", err: ErrNoBucket},
		{name: "a write does not create the bucket", args: "remotes add b.example.com", err: ErrNoBucket},
		{name: "create", args: "create", want: []string{"created bucket fedbus"}, warn: noService},
		{name: "create again", args: "create", want: []string{"bucket fedbus exists already"}, warn: noService},
		{name: "add", args: "remotes add B.example.com", want: []string{"added b.example.com (may call: default rules)"}, warn: noService},
		{name: "add with rules", args: "remotes add c.example.com -allow brig:get-user-by-handle -allow galley:*", want: []string{"added c.example.com (may call: brig:get-user-by-handle galley:*)"}, warn: noService},
		{name: "list", args: "remotes list", want: []string{"b.example.com  default rules", "c.example.com  brig:get-user-by-handle galley:*", "2 remote(s)"}},
		{name: "set default rules", args: "rules set brig:*", want: []string{"default rules: brig:*"}, warn: noService},
		{name: "show default rules", args: "rules show", want: []string{"default rules: brig:*"}},
		{name: "clear default rules", args: "rules clear", want: []string{"every rpc of FED_COMPONENTS"}, warn: noService},
		{name: "remove", args: "remotes remove b.example.com", want: []string{"removed b.example.com"}, warn: noService},
		{name: "list after remove", args: "remotes list", want: []string{"1 remote(s)"}},
		{name: "unknown component in rules", args: "rules set nosuchcomponent:foo", err: ErrUnknownComponent},
		{name: "unknown component in a remote's rules", args: "remotes add d.example.com -allow nosuchcomponent:*", err: ErrUnknownComponent},
		{name: "bad domain", args: "remotes add b..example.com", err: errAny},
		{name: "bad rule", args: "remotes add d.example.com -allow brig", err: ErrUsage},
		{name: "bad rpc", args: "remotes add d.example.com -allow brig:a*b", err: errAny},
		{name: "unknown command", args: "remotes frobnicate", err: ErrUsage},
		{name: "no subcommand", args: "remotes", err: ErrUsage},
		{name: "no command", args: "", err: ErrUsage},
	})
}

// TestServicesAndBucket: fedctl tells whether the running services watch
// the bucket it writes, and takes the federated components from them.
func TestServicesAndBucket(t *testing.T) {
	srv := startNATS(t)
	cfg := NewConfig()
	cfg.NATSURL = srv.ClientURL()
	runSteps(t, cfg, []step{{name: "create", args: "create", want: []string{"created bucket fedbus"}, warn: "no running federator or ingress answers"}})

	// The services run without a bucket (FED_KV_BUCKET empty): a write
	// changes nothing, and fedctl says so.
	fakeService(t, srv.ClientURL(), "federator", "", "brig,galley,cargohold")
	runSteps(t, cfg, []step{{name: "services watch no bucket", args: "remotes add b.example.com",
		want: []string{"added b.example.com"}, warn: "no running federator or ingress watches bucket fedbus, so this changes nothing now (running: federator of a.example.com (no bucket))"}})

	// A mistyped bucket: not created, refused.
	typo := cfg
	typo.Bucket = "fedbsu"
	runSteps(t, typo, []step{{name: "mistyped bucket", args: "remotes add b.example.com", err: ErrNoBucket}})

	// A service watches the bucket and federates brig and spar only.
	fakeService(t, srv.ClientURL(), "ingress", "fedbus", "brig,spar")
	runSteps(t, cfg, []step{
		{name: "watched", args: "remotes add c.example.com -allow spar:*", want: []string{"added c.example.com", "watched by 1 running service(s): ingress of a.example.com (bucket fedbus)"}},
		{name: "components from the services", args: "rules set galley:*", err: ErrUnknownComponent},
	})
}

// TestReplicasOnACluster: on a NATS cluster, create makes the bucket with
// FED_JETSTREAM_REPLICAS replicas, and moves a bucket made with fewer
// (before the single server became a cluster) to them.
func TestReplicasOnACluster(t *testing.T) {
	c, err := testbed.StartCluster(testbed.ClusterOptions{Name: "ctl", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	cfg := NewConfig()
	cfg.NATSURL = strings.Join(c.URLs(0), ",")
	noService := "no running federator or ingress answers"
	three := cfg
	three.Replicas = 3
	runSteps(t, cfg, []step{{name: "made with one replica", args: "create", want: []string{"created bucket fedbus (1 replica(s))"}, warn: noService}})
	runSteps(t, three, []step{
		{name: "moved to three", args: "create", want: []string{"bucket fedbus exists already: 1 replica(s) → 3"}, warn: noService},
		{name: "three already", args: "create", want: []string{"bucket fedbus exists already\n"}, warn: noService},
		{name: "writable", args: "remotes add b.example.com", want: []string{"added b.example.com"}, warn: noService},
	})
	for i := range c.Size() {
		info, err := c.Server(i).Jsz(&server.JSzOptions{Streams: true, Accounts: true})
		if err != nil {
			t.Fatal(err)
		}
		if info.Streams != 1 {
			t.Errorf("%s holds %d streams, want the bucket's replica", c.Server(i).Name(), info.Streams)
		}
	}
}
