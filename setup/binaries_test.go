package setup_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/testbed"
)

// freePort returns a loopback port nothing listens on.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestBinariesServeOps builds the federator and the ingress, runs each
// against a real NATS, DNS and certificate files, waits with its own
// -healthcheck until /readyz says ready, scrapes /metrics (promlint clean,
// every fedbus metric named fedbus_), and stops it with SIGTERM (exit 0).
func TestBinariesServeOps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "github.com/fedbus/fedbus/cmd/federator", "github.com/fedbus/fedbus/cmd/ingress")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca, err := testbed.NewCA("binaries CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a-infra.example.net")
	if err != nil {
		t.Fatal(err)
	}
	files, err := leaf.WriteFiles(t.TempDir(), "a", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	ns, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ingressPort := freePort(t)
	dns.SetSRV("a.example.com", 60, testbed.SRVRecord{Target: "fed.a-infra.example.net", Port: uint16(ingressPort), Priority: 1, Weight: 1})

	for _, prog := range []string{"federator", "ingress"} {
		t.Run(prog, func(t *testing.T) {
			opsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
			env := append(os.Environ(),
				"FED_DOMAIN=a.example.com", "FED_NATS_URL="+ns.ClientURL(), "FED_DNS_SERVER="+dns.Addr(),
				"FED_STRATEGY=allow-list", "FED_ALLOW_LIST=b.example.com",
				"FED_TLS_CERT="+files.Cert, "FED_TLS_KEY="+files.Key, "FED_TLS_CA="+files.CA,
				"FED_OPS_ADDR="+opsAddr, "FED_INGRESS_ADDR=127.0.0.1:"+strconv.Itoa(ingressPort), "FED_SHUTDOWN_TIMEOUT=5s")
			var stderr bytes.Buffer
			cmd := exec.Command(filepath.Join(bin, prog))
			cmd.Env, cmd.Stderr = env, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})

			// Its own health check, as docker-compose runs it.
			deadline := time.Now().Add(20 * time.Second)
			for {
				hc := exec.Command(filepath.Join(bin, prog), setup.HealthcheckFlag)
				hc.Env = env
				out, err := hc.CombinedOutput()
				if err == nil {
					if !strings.Contains(string(out), "ready") {
						t.Errorf("healthcheck output: %s", out)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s not ready: %v\n%s\nlogs:\n%s", prog, err, out, stderr.String())
				}
				time.Sleep(100 * time.Millisecond)
			}

			resp, err := http.Get("http://" + opsAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			problems, err := promlint.New(bytes.NewReader(body)).Lint()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
			for _, want := range []string{"fedbus_build_info{", "fedbus_nats_connected 1", "fedbus_certificate_expiry_timestamp_seconds "} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, "# HELP ") {
					name := strings.Fields(line)[2]
					if !strings.HasPrefix(name, "fedbus_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
						t.Errorf("metric %s does not start with fedbus_", name)
					}
				}
			}
			if resp, err := http.Get("http://" + opsAddr + "/livez"); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("/livez: %v %v", resp, err)
			}

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				exited <- err
				if err != nil {
					t.Errorf("%s exited with %v\n%s", prog, err, stderr.String())
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("%s did not stop", prog)
			}
		})
	}
}
