package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/test/testbed"
)

func TestPercentile(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(100-i) * time.Millisecond
	}
	p50, p90, p99 := latencySummary(lat)
	if p50 != 50*time.Millisecond || p90 != 90*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("p50 %v p90 %v p99 %v", p50, p90, p99)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Fatalf("empty: %v", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Fatalf("one: %v", got)
	}
}

func TestMakeBody(t *testing.T) {
	for _, n := range []int{2, 3, 256, 64 << 10} {
		b := makeBody(n)
		if len(b) != n || !json.Valid(b) {
			t.Fatalf("makeBody(%d): %d bytes, valid JSON %v", n, len(b), json.Valid(b))
		}
	}
}

func TestCells(t *testing.T) {
	cfg := Config{Sizes: []int{256, 65536}, InFlight: []int{1, 16, 64, 256}, Matrix: MatrixKey}
	got := cfg.Cells()
	want := []Cell{{256, 1}, {256, 16}, {256, 64}, {256, 256}, {65536, 64}}
	if len(got) != len(want) {
		t.Fatalf("key cells %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("key cells %v, want %v", got, want)
		}
	}
	cfg.Matrix = MatrixFull
	if n := len(cfg.Cells()); n != 8 {
		t.Fatalf("full: %d cells", n)
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Scenarios: AllScenarios, Sizes: []int{256}, InFlight: []int{64}, Matrix: MatrixKey,
		Duration: time.Second, Rounds: 1, ServiceLog: "none"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.Scenarios, bad.Sizes, bad.Rounds, bad.Matrix = []string{"nope"}, []int{1}, 0, "x"
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"nope", "body size 1", "rounds 0", "matrix"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSizeName(t *testing.T) {
	for n, want := range map[int]string{256: "256 B", 65536: "64 KiB", 1 << 20: "1 MiB", 1000: "1000 B"} {
		if got := sizeName(n); got != want {
			t.Errorf("sizeName(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestProcCounters(t *testing.T) {
	if _, err := os.Stat("/proc/self/io"); err != nil {
		t.Skip("no /proc")
	}
	s, err := takeSample(func() (time.Duration, error) { return treeCPU(os.Getpid()) })
	if err != nil {
		t.Fatal(err)
	}
	if s.cpu <= 0 || s.mallocs == 0 || s.syscalls == 0 {
		t.Fatalf("sample %+v", s)
	}
	rss, err := procStatus("VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("VmRSS %d, %v", rss, err)
	}
	if n, err := openFDs(); err != nil || n < 3 {
		t.Fatalf("fds %d, %v", n, err)
	}
}

func TestNginxConf(t *testing.T) {
	var buf bytes.Buffer
	p := nginxParams{Dir: "/tmp/x", Listen: "127.0.0.1:1", Upstream: "127.0.0.1:2", Cert: "c.pem", Key: "k.pem", CA: "ca.pem"}
	if err := nginxConf.Execute(&buf, p); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.1:1 ssl http2;", "server 127.0.0.1:2;", "ssl_verify_client on;", "ssl_client_certificate ca.pem;", "proxy_http_version 1.1;", "keepalive 256;"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
}

// TestFedEnvOwnOpsPort: the federators and ingresses of the procs mode,
// several on one host, each listen for their operations endpoint on a
// port of their own on loopback (the default :9090 made the second
// process refuse to start).
func TestFedEnvOwnOpsPort(t *testing.T) {
	pw := &procWorld{dns: testbed.StartDNS(t)}
	env := pw.fedEnv("a.example.com", testbed.Files{}, "b.example.com", nil)
	if !slices.Contains(env, "FED_OPS_ADDR=127.0.0.1:0") {
		t.Errorf("environment %q lacks FED_OPS_ADDR=127.0.0.1:0", env)
	}
}
