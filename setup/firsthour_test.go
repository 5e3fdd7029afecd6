package setup_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

var binaries = []string{"federator", "ingress"}

// TestHelpAndVersion: -h on stdout with the true defaults, -version.
func TestHelpAndVersion(t *testing.T) {
	for _, bin := range binaries {
		t.Run(bin, func(t *testing.T) {
			p := run(t, bin, nil, "-h")
			out := p.stdout.String()
			for _, want := range []string{`FED_COMPONENTS`, `(default "brig,galley,cargohold")`, `FED_KV_BUCKET`, `(default "fedbus")`, `-version`} {
				if !strings.Contains(out, want) {
					t.Errorf("-h lacks %s:\n%s", want, out)
				}
			}
			if p.code != 0 || p.stderr.String() != "" {
				t.Errorf("-h: exit %d, stderr %q", p.code, p.stderr.String())
			}
			p = run(t, bin, nil, "-version")
			if p.code != 0 || !strings.HasPrefix(p.stdout.String(), bin+" dev (") {
				t.Errorf("-version: exit %d, stdout %q", p.code, p.stdout.String())
			}
		})
	}
}

// TestRefusedAtStart: what would make every request fail is refused
// before serving, with one message naming the variable and the fix.
func TestRefusedAtStart(t *testing.T) {
	w := newWorld(t)
	expired := w.writeCert(t, "expired", testbed.LeafOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, infra)
	future := w.writeCert(t, "future", testbed.LeafOptions{NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}, infra)
	other := w.writeCert(t, "other", testbed.LeafOptions{NotAfter: time.Now().Add(30 * 24 * time.Hour)}, "fed.c-infra.example.net")
	w.dns.SetSRV("nosrv.example.com", 60)
	tests := []struct {
		name string
		env  map[string]string
		code int
		want []string // each in stderr
	}{
		{name: "duration without its unit", env: map[string]string{"FED_REQUEST_TIMEOUT": "10"}, code: 2, want: []string{"FED_REQUEST_TIMEOUT"}},
		{name: "typo of a variable", env: map[string]string{"FED_ALLOW_LIS": "c.example.com"}, code: 2, want: []string{"FED_ALLOW_LIS is not a fedbus variable: did you mean FED_ALLOW_LIST?"}},
		{name: "allow-list with an empty list", env: map[string]string{"FED_ALLOW_LIST": ""}, code: 2, want: []string{"FED_STRATEGY=allow-list with an empty FED_ALLOW_LIST and no FED_KV_BUCKET allows no domain"}},
		{name: "allow-all with a list", env: map[string]string{"FED_STRATEGY": "allow-all"}, code: 2, want: []string{"FED_ALLOW_LIST is set but FED_STRATEGY=allow-all ignores it"}},
		{name: "allow-none with a list", env: map[string]string{"FED_STRATEGY": "allow-none"}, code: 2, want: []string{"FED_ALLOW_LIST is set but FED_STRATEGY=allow-none ignores it"}},
		{name: "certificate expired", env: map[string]string{"FED_TLS_CERT": expired.Cert, "FED_TLS_KEY": expired.Key}, code: 1, want: []string{"start refused", "FED_TLS_CERT " + expired.Cert + " expired on", "renew it"}},
		{name: "certificate not valid yet", env: map[string]string{"FED_TLS_CERT": future.Cert, "FED_TLS_KEY": future.Key}, code: 1, want: []string{"FED_TLS_CERT " + future.Cert + " is not valid before", "clock"}},
		{name: "certificate not for our SRV target", env: map[string]string{"FED_TLS_CERT": other.Cert, "FED_TLS_KEY": other.Key}, code: 1,
			want: []string{"is for fed.c-infra.example.net, but _wire-server-federator._tcp.a.example.com (FED_DOMAIN", "points at " + infra, "authentication-failure"}},
		{name: "no SRV record of our own", env: map[string]string{"FED_DOMAIN": "nosrv.example.com"}, code: 1, want: []string{"_wire-server-federator._tcp.nosrv.example.com has no usable SRV record", "publish"}},
		{name: "named bucket missing", env: map[string]string{"FED_KV_BUCKET": "fedbsu"}, code: 1, want: []string{"bucket fedbsu (FED_KV_BUCKET) does not exist: create it with 'fedctl create'"}},
	}
	for _, tt := range tests {
		for _, bin := range binaries {
			t.Run(tt.name+"/"+bin, func(t *testing.T) {
				p := run(t, bin, w.env(tt.env))
				stderr := p.stderr.String()
				if p.code != tt.code {
					t.Errorf("exit %d, want %d", p.code, tt.code)
				}
				for _, want := range tt.want {
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr lacks %q:\n%s", want, stderr)
					}
				}
				if tt.code == 2 {
					// the heading and one line per mistake: no cascade
					if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 2 {
						t.Errorf("%d lines, want the heading and one:\n%s", len(lines), stderr)
					}
				}
			})
		}
	}
}

// TestRefusedWithoutInboxPrefix: the example NATS permissions
// (deploy/nats/fedbus.conf) without FED_NATS_INBOX_PREFIX would make every
// request wait for its deadline; the binaries refuse to start.
func TestRefusedWithoutInboxPrefix(t *testing.T) {
	w := newWorld(t)
	opts, err := server.ProcessConfigFile("../deploy/nats/fedbus.conf")
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs, opts.StoreDir = "127.0.0.1", -1, true, true, t.TempDir()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	for _, bin := range binaries {
		t.Run(bin, func(t *testing.T) {
			p := run(t, bin, w.env(map[string]string{"FED_NATS_URL": s.ClientURL(), "FED_NATS_USER": bin, "FED_NATS_PASSWORD": bin + "-example-password"}))
			if p.code != 1 || !strings.Contains(p.stderr.String(), "FED_NATS_INBOX_PREFIX is not set") || !strings.Contains(p.stderr.String(), "_INBOX_"+bin) {
				t.Errorf("exit %d, stderr:\n%s", p.code, p.stderr.String())
			}
			if strings.Contains(p.stderr.String(), bin+"-example-password") {
				t.Error("the password is in the log")
			}
		})
	}
}

// TestStartupLineAndWarnings: one start-up line with the version and the
// effective settings (no secret); a warning, once, for each setting that
// is suspicious but may be intended; the default bucket, missing at
// start, is taken up once created (SIGHUP looks at once); a clean stop
// logs no warning.
func TestStartupLineAndWarnings(t *testing.T) {
	w := newWorld(t)
	soon := w.writeCert(t, "soon", testbed.LeafOptions{NotAfter: time.Now().Add(48 * time.Hour)}, infra)
	env := w.env(map[string]string{
		"FED_NATS_URL":  strings.Replace(w.nats.ClientURL(), "nats://", "nats://fedbus:s3cret-in-url@", 1),
		"FED_NATS_USER": "fedbus", "FED_NATS_PASSWORD": "s3cret-password",
		"FED_ALLOW_LIST": "", // allow-list with the default bucket only
		"FED_KV_BUCKET":  unset,
		"FED_TLS_CERT":   soon.Cert, "FED_TLS_KEY": soon.Key,
		"FED_SOMETHING_ELSE": "1",
	})
	p := start(t, "federator", env)
	p.waitLog(t, "ready", 1)
	first := p.lines(t)[0]
	if first["msg"] != "starting federator" || !strings.HasPrefix(first["version"].(string), "dev (") {
		t.Errorf("first line %v, want the start-up line with the version", first)
	}
	for k, want := range map[string]string{"FED_STRATEGY": "allow-list", "FED_ALLOW_LIST": "", "FED_COMPONENTS": "brig,galley,cargohold",
		"FED_KV_BUCKET": "fedbus", "FED_DNS_SERVER": w.dns.Addr(), "FED_NATS_PASSWORD": "[set]", "FED_NATS_USER": "fedbus", "FED_MAX_IN_FLIGHT": "2048"} {
		if got, ok := first[k]; !ok || got != want {
			t.Errorf("start-up line: %s = %v, want %q", k, got, want)
		}
	}
	for _, warning := range []string{
		"FED_SOMETHING_ELSE is not a fedbus variable: ignored",
		"our certificate expires soon",
		"bucket fedbus (FED_KV_BUCKET) does not exist: create it with 'fedctl create'",
		"every remote domain is refused until one is added",
	} {
		found := p.find(t, warning)
		if len(found) != 1 || found[0]["level"] != "WARN" {
			t.Errorf("%q: %v, want one WARN", warning, found)
		}
	}

	// The bucket is created; SIGHUP makes the federator look at once.
	w.createBucket(t, "fedbus")
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "bucket found: the dynamic federation config applies from now on", 1)
	p.waitLog(t, "federation config loaded", 1)

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	p.waitLog(t, "stopped", 1)
	for _, secret := range []string{"s3cret-in-url", "s3cret-password"} {
		if strings.Contains(p.stderr.String(), secret) {
			t.Errorf("the log shows %s", secret)
		}
	}
	if found := p.find(t, "nats disconnected"); len(found) > 0 {
		t.Errorf("a clean stop logs %v", found)
	}
}

// TestSIGHUP: SIGHUP reloads the certificate files and the dynamic
// configuration, and does not stop the process.
func TestSIGHUP(t *testing.T) {
	w := newWorld(t)
	w.createBucket(t, "fedbus")
	for _, bin := range binaries {
		t.Run(bin, func(t *testing.T) {
			// only SIGHUP reloads: the files are not checked on their own
			p := start(t, bin, w.env(map[string]string{"FED_KV_BUCKET": "fedbus", "FED_TLS_RELOAD_INTERVAL": "1h"}))
			p.waitLog(t, "ready", 1)
			p.waitLog(t, "federation config loaded", 1)
			w.writeCert(t, "a", testbed.LeafOptions{NotAfter: time.Now().Add(60 * 24 * time.Hour)}, infra)
			p.signal(t, syscall.SIGHUP)
			reloaded := p.waitLog(t, "certificates reloaded", 1)
			p.waitLog(t, "federation config loaded", 2)
			if reloaded["level"] != "INFO" || reloaded["serial"] == nil {
				t.Errorf("reload line %v", reloaded)
			}
			p.signal(t, syscall.SIGHUP)
			p.waitLog(t, "certificates unchanged", 1)
			p.signal(t, syscall.SIGTERM)
			if code := p.wait(t, 20*time.Second); code != 0 {
				t.Errorf("exit %d after SIGHUP, SIGHUP, SIGTERM", code)
			}
		})
	}
}

// TestSecondSignal: a second SIGTERM during the drain stops the federator
// at once, instead of waiting FED_SHUTDOWN_TIMEOUT for the request in
// flight.
func TestSecondSignal(t *testing.T) {
	w := newWorld(t)
	// b.example.com's ingress accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	w.dns.SetSRV("b.example.com", 60, testbed.SRVRecord{Target: "fed.b-infra.example.net", Port: uint16(ln.Addr().(*net.TCPAddr).Port), Priority: 10, Weight: 5})
	if err := w.dns.SetA("fed.b-infra.example.net", 60, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	p := start(t, "federator", w.env(map[string]string{"FED_ALLOW_PRIVATE_TARGETS": "true", "FED_REQUEST_TIMEOUT": "60s", "FED_SHUTDOWN_TIMEOUT": "60s"}))
	p.waitLog(t, "ready", 1)
	nc, err := nats.Connect(w.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = bus.NewClient(nc, subjects, "/brig").Call(ctx, "b.example.com", "brig", "get-user-by-handle", []byte(`"alice"`))
	}()
	select { // the request is in flight: its TLS handshake waits
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the federator did not call b.example.com")
	}
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, "stopping", 1)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 1 {
		t.Errorf("exit %d after the second signal, want 1", code)
	}
	if found := p.find(t, "second signal"); len(found) != 1 || found[0]["level"] != "WARN" {
		t.Errorf("second signal lines %v", found)
	}
}

// TestIngressTCPProbe: a TCP health check (connect, close) of the ingress
// is not a warning.
func TestIngressTCPProbe(t *testing.T) {
	w := newWorld(t)
	p := start(t, "ingress", w.env(nil))
	p.waitLog(t, "ready", 1)
	addr, _ := p.waitLog(t, "serving", 1)["addr"].(string)
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	// and one TLS client that gives up: a handshake that fails is INFO
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: infra, MinVersion: tls.VersionTLS13})
	if err == nil {
		_ = c.Close()
	}
	p.waitLog(t, "TLS handshake error", 1)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	for _, l := range p.lines(t) {
		if l["level"] == "WARN" || l["level"] == "ERROR" {
			t.Errorf("line %v", l)
		}
	}
}
