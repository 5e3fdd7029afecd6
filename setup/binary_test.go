package setup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/test/testbed"
)

// The tests of this file run the real federator and ingress binaries
// (built once into a temporary directory) as an operator would: with an
// environment, signals, exit codes and the log on stderr.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary returns the path of cmd/<name>, building the binaries on first
// use.
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "fedbus-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/",
			"github.com/fedbus/fedbus/cmd/federator", "github.com/fedbus/fedbus/cmd/ingress").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// Names of the backend the binaries run for.
const (
	domain = "a.example.com"
	infra  = "fed.a-infra.example.net"
)

// world is what a backend's binaries need: NATS (with JetStream), a DNS
// server with the backend's SRV record, a CA and the backend's
// certificate files.
type world struct {
	nats *server.Server
	dns  *testbed.DNS
	ca   *testbed.CA
	dir  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ns, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ca, err := testbed.NewCA("binary test CA")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{nats: ns, dns: testbed.StartDNS(t), ca: ca, dir: t.TempDir()}
	w.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: infra, Port: 8443, Priority: 10, Weight: 5})
	if err := w.dns.SetA(infra, 60, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	w.writeCert(t, "a", testbed.LeafOptions{NotAfter: time.Now().Add(30 * 24 * time.Hour)}, infra)
	return w
}

// writeCert writes a certificate of the world's CA as <name>.crt,
// <name>.key and <name>-ca.crt.
func (w *world) writeCert(t *testing.T, name string, opts testbed.LeafOptions, dnsNames ...string) testbed.Files {
	t.Helper()
	leaf, err := w.ca.Issue(opts, dnsNames...)
	if err != nil {
		t.Fatal(err)
	}
	files, err := leaf.WriteFiles(w.dir, name, w.ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// createBucket creates a key-value bucket, as fedctl create does.
func (w *world) createBucket(t *testing.T, name string) {
	t.Helper()
	nc, err := nats.Connect(w.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctxFor(t), jetstream.KeyValueConfig{Bucket: name}); err != nil {
		t.Fatal(err)
	}
}

// env is a valid environment of the backend (allow-list with one remote,
// the static configuration only: FED_KV_BUCKET empty) with changes; the
// value unset removes a variable.
func (w *world) env(changes map[string]string) map[string]string {
	files := testbed.Files{Cert: filepath.Join(w.dir, "a.crt"), Key: filepath.Join(w.dir, "a.key"), CA: filepath.Join(w.dir, "a-ca.crt")}
	env := map[string]string{
		"FED_DOMAIN": domain, "FED_NATS_URL": w.nats.ClientURL(), "FED_DNS_SERVER": w.dns.Addr(),
		"FED_STRATEGY": "allow-list", "FED_ALLOW_LIST": "b.example.com", "FED_KV_BUCKET": "",
		"FED_TLS_CERT": files.Cert, "FED_TLS_KEY": files.Key, "FED_TLS_CA": files.CA,
		"FED_INGRESS_ADDR": "127.0.0.1:0",
		// Tests run in parallel on one host: the ops endpoint on a port of its own.
		"FED_OPS_ADDR": "127.0.0.1:0",
	}
	for k, v := range changes {
		if v == unset {
			delete(env, k)
			continue
		}
		env[k] = v
	}
	return env
}

// unset, as a value of env's changes, removes the variable.
const unset = "\x00unset"

// proc is a running binary.
type proc struct {
	cmd    *exec.Cmd
	stdout testbed.LogBuffer
	stderr testbed.LogBuffer
	done   chan struct{}
	code   int
}

// start runs the binary with exactly env.
func start(t *testing.T, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t, bin), args...), done: make(chan struct{})}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", bin, p.stderr.String())
		}
	})
	return p
}

// wait returns the exit code, failing t when the process runs longer
// than timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("still running after %v", timeout)
		return -1
	}
}

// run runs the binary to its end (at most 20 s).
func run(t *testing.T, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := start(t, bin, env, args...)
	p.wait(t, 20*time.Second)
	return p
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// lines returns the JSON log lines written so far.
func (p *proc) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split([]byte(p.stderr.String()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// find returns the log lines whose message contains msg.
func (p *proc) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range p.lines(t) {
		if m, _ := l["msg"].(string); strings.Contains(m, msg) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits (at most 10 s) for n log lines whose message contains
// msg, and returns the last.
func (p *proc) waitLog(t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if found := p.find(t, msg); len(found) >= n {
			return found[n-1]
		}
		select {
		case <-p.done:
			t.Fatalf("exited with %d before logging %q (%d times)", p.code, msg, n)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q (%d times) in the log after 10s", msg, n)
		}
	}
}

// ctxFor returns a context of a few seconds, cancelled with the test.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
