//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcnats "github.com/testcontainers/testcontainers-go/modules/nats"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
)

// The two backends of the suite.
const (
	domainA = "a.example.com"
	domainB = "b.example.com"
	infraA  = "federator.a-infra.example.net"
	infraB  = "federator.b-infra.example.net"
	// confDir is where the certificates and the zone file are mounted.
	confDir = "/etc/fedbus"
	// requestTimeout is FED_REQUEST_TIMEOUT of the federators and ingresses.
	requestTimeout = 5 * time.Second
	// startTimeout bounds the start of one container.
	startTimeout = 90 * time.Second
	// configBucket is A's FED_KV_BUCKET.
	configBucket = "fedbus"
)

// Where the processes of A are placed (FED_NATS_URL in order): server 0
// holds federator-a-1 and ingress-a, server 1 federator-a-2 and standin-a,
// server 2 federator-a-3 and the test's own components.

// image returns the image named by the environment variable, or def.
func image(envVar, def string) string {
	if v := os.Getenv(envVar); v != "" {
		return v
	}
	return def
}

// clusterSize is the number of NATS servers of A.
const clusterSize = 3

// ports are the 127.0.0.1 ports of one run (all containers share the
// host's network). A's NATS is a cluster: client, monitoring and route
// port of each server.
type ports struct {
	natsA, monA, routeA     [clusterSize]int
	natsB, monB             int
	ingressA, ingressB, dns int
}

// service is one container of the suite.
type service struct {
	name string
	ctr  testcontainers.Container
}

// env is the running system: containers, and NATS connections of the test
// process acting as the local components that call.
type env struct {
	tb     testing.TB
	dir    string
	ports  ports
	docker *testcontainers.DockerClient

	mu       sync.Mutex
	services []*service

	natsA              [clusterSize]*service
	natsB              *service
	fedA               []*service
	fedB               *service
	ingressA, ingressB *service
	devdns             *service
	standinA, standinB *service

	ncA, ncB *nats.Conn
}

// setup starts everything and registers the cleanup (container logs are
// printed when the test failed).
func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := &env{tb: t, dir: t.TempDir()}
	t.Cleanup(e.cleanup)
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatalf("docker client (is the engine running? scripts/docker-engine.sh): %v", err)
	}
	e.docker = docker
	for _, img := range []string{image("FEDBUS_IMAGE", "fedbus:dev"), image("NATS_IMAGE", "fedbus-nats:dev")} {
		if _, err := docker.ImageInspect(ctx, img); err != nil {
			t.Fatalf("image %s: %v (run `make images`)", img, err)
		}
	}
	e.ports = freePorts(t)
	e.writeConfig()
	start := time.Now()
	infra := []func() error{
		func() (err error) {
			e.natsB, err = e.startNATS(ctx, "nats-b", "-a", "127.0.0.1", "-p", strconv.Itoa(e.ports.natsB), "-m", strconv.Itoa(e.ports.monB), "-n", "nats-b")
			return
		},
		func() (err error) {
			e.devdns, err = e.start(ctx, "devdns", []string{"/devdns", "-listen", e.dnsAddr(), "-zone", confDir + "/test.zone"}, nil, "devdns serving")
			return
		},
	}
	for i := range clusterSize {
		infra = append(infra, func() (err error) {
			e.natsA[i], err = e.startNATS(ctx, natsAName(i), "-c", confDir+"/"+natsAName(i)+".conf")
			return
		})
	}
	if err := parallel(infra...); err != nil {
		t.Fatalf("start infrastructure: %v", err)
	}
	if err := e.waitClusterA(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// The dynamic federation config, replicated three times, as fedctl
	// makes it (FED_JETSTREAM_REPLICAS=3).
	if err := e.createBucket(ctx); err != nil {
		t.Fatal(err)
	}
	e.fedA = make([]*service, 3)
	starts := []func() error{
		func() (err error) {
			e.fedB, err = e.start(ctx, "federator-b", []string{"/federator"}, e.fedEnv(domainB, 0), "federator started")
			return
		},
		func() (err error) {
			e.ingressA, err = e.start(ctx, "ingress-a", []string{"/ingress"}, e.fedEnv(domainA, 0), `"msg":"serving"`)
			return
		},
		func() (err error) {
			e.ingressB, err = e.start(ctx, "ingress-b", []string{"/ingress"}, e.fedEnv(domainB, 0), `"msg":"serving"`)
			return
		},
		func() (err error) {
			e.standinA, err = e.start(ctx, "standin-a", []string{"/standin", "serve"}, e.standinEnv(domainA, 1), "standin serving")
			return
		},
		func() (err error) {
			e.standinB, err = e.start(ctx, "standin-b", []string{"/standin", "serve"}, e.standinEnv(domainB, 0), "standin serving")
			return
		},
	}
	for i := range e.fedA {
		starts = append(starts, func() (err error) {
			e.fedA[i], err = e.start(ctx, fmt.Sprintf("federator-a-%d", i+1), []string{"/federator"}, e.fedEnv(domainA, i), "federator started")
			return
		})
	}
	if err := parallel(starts...); err != nil {
		t.Fatalf("start fedbus: %v", err)
	}
	t.Logf("%d containers started in %v", len(e.services), time.Since(start).Round(time.Millisecond))
	// The test's own connections log to stderr: their callbacks may run
	// after the test ended.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	quiet := nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
		if err != nil {
			log.Warn("test client: nats disconnected", "err", err)
		}
	})
	// The test's components of A are on A's last server (no fault
	// touches it), B's on B's.
	if e.ncA, err = bus.Connect(e.natsURLsA(clusterSize-1), "integration "+domainA, log, quiet, nats.DontRandomize()); err != nil {
		t.Fatal(err)
	}
	if e.ncB, err = bus.Connect(e.natsURL(e.ports.natsB), "integration "+domainB, log, quiet); err != nil {
		t.Fatal(err)
	}
	return e
}

// cleanup prints the containers' logs when the test failed, then removes
// the containers.
func (e *env) cleanup() {
	if e.ncA != nil {
		e.ncA.Close()
	}
	if e.ncB != nil {
		e.ncB.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if e.tb.Failed() {
		e.dumpLogs(ctx)
	}
	// fedbus containers first: stopped while their NATS server is gone,
	// they would wait for their drain until docker kills them.
	e.mu.Lock()
	var fedbus, infra []*service
	for _, s := range e.services {
		if slices.Contains(e.natsA[:], s) || s == e.natsB || s == e.devdns {
			infra = append(infra, s)
		} else {
			fedbus = append(fedbus, s)
		}
	}
	e.mu.Unlock()
	if err := parallel(e.terminators(ctx, fedbus)...); err != nil {
		e.tb.Errorf("cleanup: %v", err)
	}
	if err := parallel(e.terminators(ctx, infra)...); err != nil {
		e.tb.Errorf("cleanup: %v", err)
	}
	if e.docker != nil {
		_ = e.docker.Close()
	}
}

// terminators returns functions that remove the containers.
func (e *env) terminators(ctx context.Context, services []*service) []func() error {
	fns := make([]func() error, 0, len(services))
	for _, s := range services {
		fns = append(fns, func() error {
			start := time.Now()
			if err := s.ctr.Terminate(ctx); err != nil {
				return fmt.Errorf("terminate %s: %w", s.name, err)
			}
			if took := time.Since(start); took > 3*time.Second {
				e.tb.Logf("terminating %s took %v", s.name, took.Round(time.Millisecond))
			}
			return nil
		})
	}
	return fns
}

// dumpLogs prints the last lines of every container's log.
func (e *env) dumpLogs(ctx context.Context) {
	const maxLines = 150
	e.mu.Lock()
	services := append([]*service(nil), e.services...)
	e.mu.Unlock()
	for _, s := range services {
		lines, err := containerLog(ctx, s)
		if err != nil {
			fmt.Printf("=== logs of %s: %v\n", s.name, err)
			continue
		}
		if len(lines) > maxLines {
			lines = lines[len(lines)-maxLines:]
		}
		fmt.Printf("=== logs of %s (last %d lines)\n", s.name, len(lines))
		for _, l := range lines {
			fmt.Printf("[%s] %s\n", s.name, l)
		}
	}
}

// containerLog returns the log lines of a container.
func containerLog(ctx context.Context, s *service) ([]string, error) {
	rc, err := s.ctr.Logs(ctx)
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", s.name, err)
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return lines, fmt.Errorf("logs of %s: %w", s.name, err)
	}
	return lines, nil
}

// freePorts picks the ports of a run: free TCP ports on 127.0.0.1, and
// for DNS one free for both TCP and UDP.
func freePorts(tb testing.TB) ports {
	tb.Helper()
	var held []io.Closer
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	tcp := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("free port: %v", err)
		}
		held = append(held, ln)
		return ln.Addr().(*net.TCPAddr).Port
	}
	var p ports
	for i := range clusterSize {
		p.natsA[i], p.monA[i], p.routeA[i] = tcp(), tcp(), tcp()
	}
	p.natsB, p.monB, p.ingressA, p.ingressB = tcp(), tcp(), tcp(), tcp()
	for range 50 {
		port := tcp()
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			held = append(held, pc)
			p.dns = port
			return p
		}
	}
	tb.Fatal("no port free for both TCP and UDP")
	return p
}

func (e *env) dnsAddr() string         { return net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ports.dns)) }
func (e *env) natsURL(port int) string { return "nats://127.0.0.1:" + strconv.Itoa(port) }

// natsAName is the name of A's server i (nats-a-1 …).
func natsAName(i int) string { return "nats-a-" + strconv.Itoa(i+1) }

// natsURLsA is FED_NATS_URL of a process of A placed on server first: every
// server of A's cluster, first first (with FED_NATS_IN_ORDER).
func (e *env) natsURLsA(first int) string {
	urls := make([]string, 0, clusterSize)
	for k := range clusterSize {
		urls = append(urls, e.natsURL(e.ports.natsA[(first+k)%clusterSize]))
	}
	return strings.Join(urls, ",")
}

// writeConfig writes the CA, the backends' certificates and the zone file
// into e.dir, readable by the containers' unprivileged user.
func (e *env) writeConfig() {
	e.tb.Helper()
	ca, err := testbed.NewCA("fedbus integration CA")
	if err != nil {
		e.tb.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o644); err != nil {
			e.tb.Fatal(err)
		}
	}
	write("ca.crt", ca.CertPEM)
	for domain, host := range map[string]string{domainA: infraA, domainB: infraB} {
		leaf, err := ca.Issue(testbed.LeafOptions{}, host)
		if err != nil {
			e.tb.Fatal(err)
		}
		write(domain+".crt", leaf.CertPEM)
		write(domain+".key", leaf.KeyPEM)
	}
	write("test.zone", fmt.Appendf(nil, `$TTL 5
_wire-server-federator._tcp.%s. IN SRV 10 5 %d %s.
_wire-server-federator._tcp.%s. IN SRV 10 5 %d %s.
%s. IN A 127.0.0.1
%s. IN A 127.0.0.1
`, domainA, e.ports.ingressA, infraA, domainB, e.ports.ingressB, infraB, infraA, infraB))
	for i := range clusterSize {
		var routes []string
		for j := range clusterSize {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", e.ports.routeA[j]))
			}
		}
		write(natsAName(i)+".conf", fmt.Appendf(nil, `server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: /data }
cluster { name: a, listen: 127.0.0.1:%d, routes: [%s] }
lame_duck_grace_period: 1s
lame_duck_duration: 30s
`, natsAName(i), e.ports.natsA[i], e.ports.monA[i], e.ports.routeA[i], strings.Join(routes, ", ")))
		// The server's JetStream store, kept across restarts of its
		// container, writable by the image's user.
		data := filepath.Join(e.dir, natsAName(i)+"-data")
		if err := os.Mkdir(data, 0o777); err != nil {
			e.tb.Fatal(err)
		}
		if err := os.Chmod(data, 0o777); err != nil {
			e.tb.Fatal(err)
		}
	}
	if err := os.Chmod(e.dir, 0o755); err != nil {
		e.tb.Fatal(err)
	}
}

// fedEnv is the environment of a federator or ingress of domain.
// A process of A is placed on server server of A's cluster (FED_NATS_URL
// in order); B has one server.
func (e *env) fedEnv(domain string, server int) map[string]string {
	natsURL, ingressPort, other := e.natsURLsA(server), e.ports.ingressA, domainB
	if domain == domainB {
		natsURL, ingressPort, other = e.natsURL(e.ports.natsB), e.ports.ingressB, domainA
	}
	return map[string]string{
		"FED_DOMAIN":                domain,
		"FED_NATS_URL":              natsURL,
		"FED_NATS_IN_ORDER":         "true",
		"FED_DNS_SERVER":            e.dnsAddr(),
		"FED_STRATEGY":              "allow-list",
		"FED_ALLOW_LIST":            other,
		"FED_TLS_CERT":              confDir + "/" + domain + ".crt",
		"FED_TLS_KEY":               confDir + "/" + domain + ".key",
		"FED_TLS_CA":                confDir + "/ca.crt",
		"FED_INGRESS_ADDR":          "127.0.0.1:" + strconv.Itoa(ingressPort),
		"FED_ALLOW_PRIVATE_TARGETS": "true",
		"FED_REQUEST_TIMEOUT":       requestTimeout.String(),
		"FED_SHUTDOWN_TIMEOUT":      "15s",
		// Several processes share the host's network: each its own port.
		"FED_OPS_ADDR": "127.0.0.1:0",
		// The suite loads one origin with several hundred requests per
		// second; the ingress's per-origin rate limit is not under test.
		"FED_INGRESS_ORIGIN_RATE": "0",
		// A's dynamic config, replicated on its cluster; B has no
		// JetStream (static configuration only).
		"FED_KV_BUCKET": bucketOf(domain),
	}
}

// bucketOf is FED_KV_BUCKET of a backend: A's cluster holds one, B has
// none (static configuration).
func bucketOf(domain string) string {
	if domain == domainA {
		return configBucket
	}
	return ""
}

// standinEnv is the environment of the stand-in brig of domain (on server
// server of A's cluster).
func (e *env) standinEnv(domain string, server int) map[string]string {
	url := e.natsURLsA(server)
	if domain == domainB {
		url = e.natsURL(e.ports.natsB)
	}
	return map[string]string{"FED_DOMAIN": domain, "FED_NATS_URL": url, "FED_NATS_IN_ORDER": "true"}
}

// hostNetwork runs a container on the host's network (no published ports).
func (e *env) hostNetwork(hc *container.HostConfig) {
	hc.NetworkMode = "host"
	hc.PortBindings = nil
	hc.PublishAllPorts = false
	hc.Binds = append(hc.Binds, e.dir+":"+confDir+":ro")
}

func (e *env) add(name string, ctr testcontainers.Container) *service {
	s := &service{name: name, ctr: ctr}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.services = append(e.services, s)
	return s
}

// start runs the fedbus image with cmd and waits for waitLog in its log.
func (e *env) start(ctx context.Context, name string, cmd []string, vars map[string]string, waitLog string) (*service, error) {
	ctr, err := testcontainers.Run(ctx, image("FEDBUS_IMAGE", "fedbus:dev"),
		testcontainers.WithCmd(cmd...),
		testcontainers.WithEnv(vars),
		testcontainers.WithHostConfigModifier(e.hostNetwork),
		testcontainers.WithWaitStrategyAndDeadline(startTimeout, wait.ForLog(waitLog)),
	)
	var s *service
	if ctr != nil {
		s = e.add(name, ctr)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return s, nil
}

// startNATS runs the NATS image through the testcontainers NATS module
// with the arguments args (a server of A's cluster gets its JetStream
// store mounted on /data).
func (e *env) startNATS(ctx context.Context, name string, args ...string) (*service, error) {
	ctr, err := tcnats.Run(ctx, image("NATS_IMAGE", "fedbus-nats:dev"),
		testcontainers.WithCmd(args...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			e.hostNetwork(hc)
			if strings.HasPrefix(name, "nats-a-") {
				hc.Binds = append(hc.Binds, filepath.Join(e.dir, name+"-data")+":/data")
			}
		}),
		testcontainers.WithWaitStrategyAndDeadline(startTimeout, wait.ForLog("Server is ready")),
	)
	var s *service
	if ctr != nil {
		s = e.add(name, ctr)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return s, nil
}

// waitClusterA waits until every server of A reports healthy (routes up,
// JetStream current): GET /healthz on its monitoring port.
func (e *env) waitClusterA(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for i := range clusterSize {
		for {
			err := healthz(ctx, e.ports.monA[i])
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not healthy after %v: %w", natsAName(i), within, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func healthz(ctx context.Context, monitor int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", monitor), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("healthz %d: %s", resp.StatusCode, body)
	}
	return nil
}

// createBucket makes A's dynamic-config bucket with three replicas, as
// fedctl does with FED_JETSTREAM_REPLICAS=3.
func (e *env) createBucket(ctx context.Context) error {
	nc, err := nats.Connect(e.natsURLsA(0))
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := policy.OpenStore(cctx, js, configBucket, clusterSize)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kill sends signal to a container's main process.
func (e *env) kill(ctx context.Context, s *service, signal string) error {
	if _, err := e.docker.ContainerKill(ctx, s.ctr.GetContainerID(), client.ContainerKillOptions{Signal: signal}); err != nil {
		return fmt.Errorf("kill -%s %s: %w", signal, s.name, err)
	}
	return nil
}

// stop stops a container (SIGTERM, SIGKILL after grace).
func stop(ctx context.Context, s *service, grace time.Duration) error {
	if err := s.ctr.Stop(ctx, &grace); err != nil {
		return fmt.Errorf("stop %s: %w", s.name, err)
	}
	return nil
}

// restart starts a stopped container again.
func restart(ctx context.Context, s *service) error {
	if err := s.ctr.Start(ctx); err != nil {
		return fmt.Errorf("start %s again: %w", s.name, err)
	}
	return nil
}

// exitCode returns the exit status of a stopped container.
func exitCode(ctx context.Context, s *service) (int, error) {
	st, err := s.ctr.State(ctx)
	if err != nil {
		return 0, fmt.Errorf("state of %s: %w", s.name, err)
	}
	if st.Running {
		return 0, fmt.Errorf("%s is still running", s.name)
	}
	return st.ExitCode, nil
}

// connInfo is one client connection as the NATS monitoring endpoint
// /connz reports it.
type connInfo struct {
	CID     uint64 `json:"cid"`
	Name    string `json:"name"`
	Port    int    `json:"port"`
	InMsgs  int64  `json:"in_msgs"`
	OutMsgs int64  `json:"out_msgs"`
	Subs    int    `json:"subscriptions"`
}

// connz returns the connections of the NATS server whose monitoring port
// is monitor, by client name prefix (all with ""), keyed by the server's
// port and the connection id.
func connz(ctx context.Context, monitor int, namePrefix string) (map[string]connInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", monitor), nil)
	if err != nil {
		return nil, fmt.Errorf("connz: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("connz: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Connections []connInfo `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("connz: decode: %w", err)
	}
	out := make(map[string]connInfo)
	for _, c := range body.Connections {
		if strings.HasPrefix(c.Name, namePrefix) {
			out[fmt.Sprintf("%d/%d", monitor, c.CID)] = c
		}
	}
	return out, nil
}

// connsOf returns the connections of domain's processes whose name starts
// with prefix, on every running NATS server of the domain.
func (e *env) connsOf(ctx context.Context, domain, prefix string) (map[string]connInfo, error) {
	mons := []int{e.ports.monB}
	if domain == domainA {
		mons = e.ports.monA[:]
	}
	out := make(map[string]connInfo)
	var errs []error
	for _, mon := range mons {
		conns, err := connz(ctx, mon, prefix)
		if err != nil {
			errs = append(errs, err) // a server that is down
			continue
		}
		maps.Copy(out, conns)
	}
	if len(errs) == len(mons) {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// federatorsOf returns the federator connections of domain.
func (e *env) federatorsOf(ctx context.Context, domain string) (map[string]connInfo, error) {
	return e.connsOf(ctx, domain, "federator "+domain)
}

// waitFederators waits until n federators of domain are connected and
// subscribed.
func (e *env) waitFederators(ctx context.Context, domain string, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		conns, err := e.federatorsOf(ctx, domain)
		if err == nil {
			subscribed := 0
			for _, c := range conns {
				if c.Subs > 0 {
					subscribed++
				}
			}
			if subscribed == n && len(conns) == n {
				return nil
			}
			err = fmt.Errorf("%d federator connections, %d subscribed, want %d", len(conns), subscribed, n)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("federators of %s after %v: %w", domain, within, last)
}

// parallel runs fns concurrently and joins their errors.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
