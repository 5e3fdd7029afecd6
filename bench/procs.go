package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fedbus/fedbus/test/testbed"
)

// The separate-process mode (RunProcs): fedbus measured the way it is
// deployed, every part its own process on 127.0.0.1: nats-server for A and
// for B (the binary built from the module in go.mod), N federator
// processes of A and N ingress processes of B (the real binaries,
// configured from the environment), the echo component on B and the load
// client on A (fedbench child processes: bus.Serve, and bus.Client through
// a bus.Requester). The CPU time of every process is read from
// /proc/<pid>/stat at the start and the end of each window. The in-process
// federated scenario and nginx (its load client and Go echo as processes
// too) are measured in the same run, interleaved.

// ProcsConfig is the separate-process mode.
type ProcsConfig struct {
	// BinDir holds nats-server, federator and ingress (make bench builds
	// them there).
	BinDir string
	// Workers are the numbers of federator processes (and as many ingress
	// processes) measured, e.g. 1, 2, 4.
	Workers  []int
	InFlight int
	Body     int
	Duration time.Duration
	Warmup   time.Duration
	Rounds   int
	// NginxPath is the nginx binary (empty: PATH or /usr/sbin/nginx;
	// skipped when there is none).
	NginxPath string
	// Variants are environments added to the federator and ingress
	// processes, each measured (e.g. "" and "GOMAXPROCS=2"): space-separated
	// VAR=value; the word bin=DIR takes their binaries from DIR instead of
	// BinDir (to compare two builds). Default: one variant, nothing added.
	Variants []string
	// InfraEnv is added to the environment of the other processes: the
	// nats-server processes, the echo component and the load clients
	// (e.g. GOMAXPROCS=1 for all of them).
	InfraEnv []string
	// ProfileDir, when set, receives CPU profiles of one federator and one
	// ingress process (FED_PPROF_ADDR) taken during the first window of
	// the first topology.
	ProfileDir string
	Out        io.Writer
	Logger     *slog.Logger
}

// Validate checks the mode's parameters.
func (c *ProcsConfig) Validate() error {
	var errs []error
	if len(c.Workers) == 0 {
		errs = append(errs, errors.New("no worker count"))
	}
	for _, n := range c.Workers {
		if n < 1 || n > 16 {
			errs = append(errs, fmt.Errorf("worker count %d is not 1 to 16", n))
		}
	}
	if c.InFlight < 1 || c.InFlight > 4096 || c.Body < 2 || c.Body > 1<<20 {
		errs = append(errs, errors.New("in flight must be 1 to 4096 and the body 2 B to 1 MiB"))
	}
	if c.Duration <= 0 || c.Warmup < 0 || c.Rounds < 1 {
		errs = append(errs, errors.New("duration and rounds must be positive"))
	}
	for _, b := range []string{"nats-server", "federator", "ingress"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (build it: make bench does)", b, err))
		}
	}
	return errors.Join(errs...)
}

// Roles of the processes, in the order of the report's columns.
const (
	roleLoad      = "load"
	roleComponent = "component"
	roleNATS      = "nats"
	roleFederator = "federators"
	roleIngress   = "ingresses"
	roleNginx     = "nginx"
)

var procRoles = []string{roleLoad, roleComponent, roleNATS, roleFederator, roleIngress, roleNginx}

// proc is a child process of the mode.
type proc struct {
	name, role string
	cmd        *exec.Cmd
	log        string // its stderr
	lines      chan string
	stdin      io.WriteCloser
	done       chan struct{}
}

// procWorld is what the mode runs.
type procWorld struct {
	cfg  ProcsConfig
	log  *slog.Logger
	dir  string
	ca   *testbed.CA
	dns  *testbed.DNS
	a, b testbed.Files

	natsA, natsB       string // client URLs
	monA               int    // A's monitoring port
	infra              []*proc
	loader, nginxLoad  *proc
	nginx              *nginxProc
	nginxPort          string
	mu                 sync.Mutex
	running            []*proc
	federators, ingres []*proc
}

// ProcsRow is one measured topology.
type ProcsRow struct {
	Name     string                   `json:"name"`
	Workers  int                      `json:"workers"`
	Requests int                      `json:"requests"`
	Errors   int                      `json:"errors"`
	FirstErr string                   `json:"first_error,omitempty"`
	Window   time.Duration            `json:"window_ns"`
	Lat      []time.Duration          `json:"-"`
	CPU      map[string]time.Duration `json:"cpu_ns"` // by role
	// Switches are the context switches of every thread, by role.
	Switches map[string]int64 `json:"context_switches"`
}

func (r *ProcsRow) add(o ProcsRow) {
	r.Requests += o.Requests
	r.Errors += o.Errors
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
	r.Window += o.Window
	r.Lat = append(r.Lat, o.Lat...)
	if r.CPU == nil {
		r.CPU = make(map[string]time.Duration)
		r.Switches = make(map[string]int64)
	}
	for k, v := range o.CPU {
		r.CPU[k] += v
	}
	for k, v := range o.Switches {
		r.Switches[k] += v
	}
}

func (r *ProcsRow) rps() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Window.Seconds()
}

func (r *ProcsRow) totalCPU() time.Duration {
	var t time.Duration
	for _, v := range r.CPU {
		t += v
	}
	return t
}

// RunProcs runs the separate-process mode and prints its table.
func RunProcs(ctx context.Context, cfg ProcsConfig) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pw := &procWorld{cfg: cfg, log: log}
	defer func() { err = errors.Join(err, pw.close()) }()
	if err := pw.start(ctx); err != nil {
		return err
	}
	inproc, err := newWorld(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = errors.Join(err, inproc.close(cctx))
	}()
	fed, err := inproc.federatedScenario()
	if err != nil {
		return err
	}
	bin := findNginx(cfg.NginxPath)
	if bin != "" {
		if err := pw.startNginx(ctx, bin); err != nil {
			return err
		}
	}
	fmt.Fprintf(cfg.Out, "fedbench procs: %d CPUs, %s, %s; %d in flight × %s, %d round(s) × %v window after %v warm-up\n",
		runtime.NumCPU(), cpuModel(), runtime.Version(), cfg.InFlight, sizeName(cfg.Body), cfg.Rounds, cfg.Duration, cfg.Warmup)
	variants := cfg.Variants
	if len(variants) == 0 {
		variants = []string{""}
	}
	if len(cfg.InfraEnv) > 0 {
		fmt.Fprintf(cfg.Out, "environment of nats-server, the echo component and the load clients: %s\n", strings.Join(cfg.InfraEnv, " "))
	}
	in := ProcsRow{Name: "in-process federated (fedbench, one process)"}
	rows := make([]ProcsRow, len(cfg.Workers)*len(variants))
	ngx := ProcsRow{Name: "nginx single hop (processes)"}
	cell := Cell{Body: cfg.Body, InFlight: cfg.InFlight}
	for round := range cfg.Rounds {
		log.Info("measuring", "topology", "in-process", "round", round+1)
		w, err := measure(ctx, fed, cell, cfg.Warmup, cfg.Duration)
		if err != nil {
			return fmt.Errorf("in-process: %w", err)
		}
		in.add(ProcsRow{Requests: len(w.lat), Errors: w.errs, FirstErr: w.firstErr, Window: w.elapsed, Lat: w.lat, CPU: map[string]time.Duration{"in-process": w.cpu}})
		for v, variant := range variants {
			for i, n := range cfg.Workers {
				log.Info("measuring", "topology", n, "variant", variant, "round", round+1)
				profile := cfg.ProfileDir != "" && round == 0 && i == 0 && v == 0
				r, err := pw.measureTopology(ctx, n, strings.Fields(variant), profile)
				if err != nil {
					return fmt.Errorf("%d federators and ingresses: %w", n, err)
				}
				row := &rows[v*len(cfg.Workers)+i]
				row.Name = fmt.Sprintf("%d federator + %d ingress", n, n)
				if variant != "" {
					row.Name += ", " + variant
				}
				row.Workers = n
				row.add(r)
			}
		}
		if pw.nginx != nil {
			log.Info("measuring", "topology", "nginx", "round", round+1)
			r, err := pw.measureNginx(ctx)
			if err != nil {
				return fmt.Errorf("nginx: %w", err)
			}
			ngx.add(r)
		}
	}
	printProcs(cfg.Out, in, rows, ngx, pw.nginx != nil)
	return nil
}

// start writes the certificates, starts DNS, the NATS servers, the echo
// component and the load client.
func (pw *procWorld) start(ctx context.Context) error {
	var err error
	if pw.dir, err = os.MkdirTemp("", "fedbench-procs-"); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if pw.ca, err = testbed.NewCA("fedbench procs CA"); err != nil {
		return err
	}
	issue := func(domain, host string) (testbed.Files, error) {
		leaf, err := pw.ca.Issue(testbed.LeafOptions{}, host)
		if err != nil {
			return testbed.Files{}, err
		}
		return leaf.WriteFiles(pw.dir, domain, pw.ca.CertPEM)
	}
	if pw.a, err = issue(domainA, infraA); err != nil {
		return err
	}
	if pw.b, err = issue(domainB, infraB); err != nil {
		return err
	}
	if pw.dns, err = testbed.NewDNS(); err != nil {
		return err
	}
	if err := pw.dns.Start(); err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	// A's identity for B's ingress: the SRV record names A's certificate.
	pw.dns.SetSRV(domainA, 3600, testbed.SRVRecord{Target: infraA, Port: 9, Priority: 10, Weight: 5})
	for _, h := range []string{infraA, infraB} {
		if err := pw.dns.SetA(h, 3600, "127.0.0.1"); err != nil {
			return err
		}
	}
	natsA, monA, err := pw.startNATS(ctx, "nats-a")
	if err != nil {
		return err
	}
	natsB, _, err := pw.startNATS(ctx, "nats-b")
	if err != nil {
		return err
	}
	pw.natsA, pw.natsB, pw.monA = natsA, natsB, monA
	echo, err := pw.startChild(ctx, "echo", roleComponent, childArgs{Mode: "echo", NATS: natsB})
	if err != nil {
		return err
	}
	pw.infra = append(pw.infra, echo)
	if pw.loader, err = pw.startChild(ctx, "load", roleLoad, childArgs{Mode: "load", Target: natsA}); err != nil {
		return err
	}
	return nil
}

// startNATS runs nats-server on free ports and returns its client URL and
// monitoring port.
func (pw *procWorld) startNATS(ctx context.Context, name string) (string, int, error) {
	addr, err := freePort()
	if err != nil {
		return "", 0, err
	}
	mon, err := freePort()
	if err != nil {
		return "", 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	_, mport, _ := net.SplitHostPort(mon)
	p, err := pw.spawn(ctx, name, roleNATS, filepath.Join(pw.cfg.BinDir, "nats-server"), []string{"-a", "127.0.0.1", "-p", port, "-m", mport, "-n", name}, pw.cfg.InfraEnv)
	if err != nil {
		return "", 0, err
	}
	pw.infra = append(pw.infra, p)
	if err := waitListening(ctx, p, addr); err != nil {
		return "", 0, err
	}
	m, _ := strconv.Atoi(mport)
	return "nats://" + addr, m, nil
}

// childArgs configure a fedbench child process (ProcChild).
type childArgs struct {
	Mode   string `json:"mode"`             // echo, httpecho, load
	NATS   string `json:"nats,omitempty"`   // echo: B's NATS
	Listen string `json:"listen,omitempty"` // httpecho
	// Target is what load calls: a NATS URL (bus.Client through a
	// Requester to B's echo, through A's federators) or an https URL (the
	// HTTP/2 client with A's certificate).
	Target string `json:"target,omitempty"`
	Cert   string `json:"cert,omitempty"`
	Key    string `json:"key,omitempty"`
	CA     string `json:"ca,omitempty"`
}

// startChild runs fedbench itself as a child process and waits for its
// READY line.
func (pw *procWorld) startChild(ctx context.Context, name, role string, args childArgs) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own executable: %w", err)
	}
	data, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	p, err := pw.spawn(ctx, name, role, exe, []string{"-proc", string(data)}, pw.cfg.InfraEnv)
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(ctx, "READY", 15*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// spawn starts a child process (killed with fedbench) whose stdout lines
// arrive on p.lines and whose stderr goes to a file.
func (pw *procWorld) spawn(ctx context.Context, name, role, bin string, args, env []string) (*proc, error) {
	p := &proc{name: name, role: role, log: filepath.Join(pw.dir, name+".log"), lines: make(chan string, 16), done: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		defer close(p.done)
		defer logFile.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		_ = p.cmd.Wait()
	}()
	pw.mu.Lock()
	pw.running = append(pw.running, p)
	pw.mu.Unlock()
	return p, nil
}

// expect waits for a stdout line starting with prefix and returns it.
func (p *proc) expect(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("%s exited before %q:%s", p.name, prefix, p.tail())
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-timer.C:
			return "", fmt.Errorf("%s: no %q after %v:%s", p.name, prefix, timeout, p.tail())
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// tail returns the end of the process's stderr, for error messages.
func (p *proc) tail() string {
	data, err := os.ReadFile(p.log)
	if err != nil || len(data) == 0 {
		return ""
	}
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return "\n" + string(data)
}

// stop ends the process (SIGTERM, SIGKILL after 10 s).
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitListening(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited:%s", p.name, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on %s:%s", p.name, addr, p.tail())
		}
	}
}

// fedEnv is the environment of a federator of A or an ingress of B.
func (pw *procWorld) fedEnv(domain string, files testbed.Files, peer string, variant []string, extra ...string) []string {
	env := []string{
		"FED_DOMAIN=" + domain, "FED_DNS_SERVER=" + pw.dns.Addr(), "FED_STRATEGY=allow-list", "FED_ALLOW_LIST=" + peer,
		"FED_TLS_CERT=" + files.Cert, "FED_TLS_KEY=" + files.Key, "FED_TLS_CA=" + files.CA,
		"FED_ALLOW_PRIVATE_TARGETS=true", "FED_LOG_LEVEL=warn",
		"FED_OPS_ADDR=127.0.0.1:0", // each process its own port, on loopback (not the host's shared :9090)
		"FED_KV_BUCKET=",           // static configuration: the benchmark's NATS has no JetStream
		// The benchmark measures the request path, not the limits.
		"FED_INGRESS_ORIGIN_RATE=0", "FED_INGRESS_ORIGIN_CONCURRENCY=0", "FED_INGRESS_CERT_RATE=0", "FED_INGRESS_CERT_CONCURRENCY=0",
	}
	env = append(env, extra...)
	return append(env, variant...)
}

// startTopology starts n federators of A and n ingresses of B, and points
// B's SRV record at the ingresses.
func (pw *procWorld) startTopology(ctx context.Context, n int, variant []string, profile bool) error {
	binDir := pw.cfg.BinDir
	variant = slices.DeleteFunc(slices.Clone(variant), func(v string) bool {
		dir, ok := strings.CutPrefix(v, "bin=")
		if ok {
			binDir = dir
		}
		return ok
	})
	// B's SRV record lists the ingresses first: each binary checks its
	// own record at start.
	var targets []testbed.SRVRecord
	addrs := make([]string, n)
	for i := range n {
		addr, err := freePort()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(addr)
		pt, _ := strconv.Atoi(port)
		addrs[i] = addr
		targets = append(targets, testbed.SRVRecord{Target: infraB, Port: uint16(pt), Priority: 10, Weight: 10})
	}
	pw.dns.SetSRV(domainB, 3600, targets...)
	for i, addr := range addrs {
		extra := []string{"FED_NATS_URL=" + pw.natsB, "FED_INGRESS_ADDR=" + addr}
		if profile && i == 0 {
			extra = append(extra, "FED_PPROF_ADDR=127.0.0.1:0")
		}
		p, err := pw.spawn(ctx, fmt.Sprintf("ingress-%d", i+1), roleIngress, filepath.Join(binDir, "ingress"), nil, pw.fedEnv(domainB, pw.b, domainA, variant, extra...))
		if err != nil {
			return err
		}
		pw.ingres = append(pw.ingres, p)
		if err := waitListening(ctx, p, addr); err != nil {
			return err
		}
	}
	for i := range n {
		extra := []string{"FED_NATS_URL=" + pw.natsA}
		if profile && i == 0 {
			extra = append(extra, "FED_PPROF_ADDR=127.0.0.1:0")
		}
		p, err := pw.spawn(ctx, fmt.Sprintf("federator-%d", i+1), roleFederator, filepath.Join(binDir, "federator"), nil, pw.fedEnv(domainA, pw.a, domainB, variant, extra...))
		if err != nil {
			return err
		}
		pw.federators = append(pw.federators, p)
	}
	// The federators are ready once each has subscribed on A's NATS.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n2, err := subscribedClients(ctx, pw.monA, "federator "+domainA)
		if err == nil && n2 == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d federators subscribed after 20s (%v):%s", n2, n, err, pw.federators[0].tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopTopology stops the federators and ingresses.
func (pw *procWorld) stopTopology() {
	var wg sync.WaitGroup
	for _, p := range slices.Concat(pw.federators, pw.ingres) {
		wg.Go(p.stop)
	}
	wg.Wait()
	pw.federators, pw.ingres = nil, nil
}

// subscribedClients counts the connections of A's NATS named name that
// have a subscription (nats-server's /connz).
func subscribedClients(ctx context.Context, monitor int, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/connz", monitor), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Connections []struct {
			Name string `json:"name"`
			Subs int    `json:"subscriptions"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range body.Connections {
		if c.Name == name && c.Subs > 0 {
			n++
		}
	}
	return n, nil
}

// measureTopology measures one window with n federators and ingresses.
func (pw *procWorld) measureTopology(ctx context.Context, n int, variant []string, profile bool) (ProcsRow, error) {
	defer pw.stopTopology()
	if err := pw.startTopology(ctx, n, variant, profile); err != nil {
		return ProcsRow{}, err
	}
	procs := slices.Concat(pw.infra, []*proc{pw.loader}, pw.federators, pw.ingres)
	var profiles func() error
	if profile {
		profiles = pw.startProfiles(ctx)
	}
	row, err := pw.window(ctx, pw.loader, procs)
	if profiles != nil {
		err = errors.Join(err, profiles())
	}
	return row, err
}

// window runs one measuring window of the load client loader and returns
// the requests it counted and the CPU time of procs by role.
func (pw *procWorld) window(ctx context.Context, loader *proc, procs []*proc) (ProcsRow, error) {
	cmd := fmt.Sprintf("window %d %d %d %d\n", pw.cfg.Warmup.Milliseconds(), pw.cfg.Duration.Milliseconds(), pw.cfg.InFlight, pw.cfg.Body)
	if _, err := io.WriteString(loader.stdin, cmd); err != nil {
		return ProcsRow{}, fmt.Errorf("load client: %w", err)
	}
	grace := pw.cfg.Warmup + pw.cfg.Duration + cellGrace
	if _, err := loader.expect(ctx, "T0", grace); err != nil {
		return ProcsRow{}, err
	}
	c0, s0, err := cpuByRole(procs)
	if err != nil {
		return ProcsRow{}, err
	}
	if _, err := loader.expect(ctx, "T1", grace); err != nil {
		return ProcsRow{}, err
	}
	c1, s1, err := cpuByRole(procs)
	if err != nil {
		return ProcsRow{}, err
	}
	line, err := loader.expect(ctx, "RESULT ", grace)
	if err != nil {
		return ProcsRow{}, err
	}
	var res loadResult
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), &res); err != nil {
		return ProcsRow{}, fmt.Errorf("load result: %w", err)
	}
	row := ProcsRow{Requests: len(res.Lat), Errors: res.Errors, FirstErr: res.FirstErr, Window: res.Elapsed, Lat: res.Lat,
		CPU: make(map[string]time.Duration), Switches: make(map[string]int64)}
	for role, v := range c1 {
		row.CPU[role] = v - c0[role]
		row.Switches[role] = s1[role] - s0[role]
	}
	return row, nil
}

// cpuByRole sums the CPU time and the context switches of the processes
// by role.
func cpuByRole(procs []*proc) (map[string]time.Duration, map[string]int64, error) {
	cpu := make(map[string]time.Duration)
	switches := make(map[string]int64)
	for _, p := range procs {
		var c time.Duration
		var err error
		if p.role == roleNginx {
			c, err = treeCPU(p.cmd.Process.Pid)
		} else {
			c, err = procCPU(p.cmd.Process.Pid)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("cpu of %s: %w", p.name, err)
		}
		cpu[p.role] += c
		if p.role != roleNginx {
			switches[p.role] += contextSwitches(p.cmd.Process.Pid)
		}
	}
	return cpu, switches, nil
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of process pid (/proc/<pid>/task/*/status): a thread that
// sleeps and is woken again counts one.
func contextSwitches(pid int) int64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, t := range tasks {
		data, err := os.ReadFile(filepath.Join(dir, t.Name(), "status"))
		if err != nil {
			continue // the thread ended
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// startNginx starts the Go HTTP/1.1 echo and the HTTP/2 load client as
// processes, and nginx in front of the echo.
func (pw *procWorld) startNginx(ctx context.Context, bin string) error {
	up, err := freePort()
	if err != nil {
		return err
	}
	echo, err := pw.startChild(ctx, "httpecho", roleComponent, childArgs{Mode: "httpecho", Listen: up})
	if err != nil {
		return err
	}
	pw.infra = append(pw.infra, echo)
	listen, err := freePort()
	if err != nil {
		return err
	}
	dir := filepath.Join(pw.dir, "nginx")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("nginx dir: %w", err)
	}
	if err := os.Chmod(pw.dir, 0o755); err != nil {
		return fmt.Errorf("nginx dir: %w", err)
	}
	if pw.nginx, err = startNginx(ctx, bin, dir, nginxParams{Dir: dir, Listen: listen, Upstream: up, Cert: pw.b.Cert, Key: pw.b.Key, CA: pw.b.CA}); err != nil {
		return err
	}
	pw.nginxPort = listen
	pw.nginxLoad, err = pw.startChild(ctx, "nginx-load", roleLoad, childArgs{Mode: "load", Target: "https://" + listen + echoPath, Cert: pw.a.Cert, Key: pw.a.Key, CA: pw.a.CA})
	return err
}

// measureNginx measures one window of the HTTP/2 load client to nginx.
func (pw *procWorld) measureNginx(ctx context.Context) (ProcsRow, error) {
	ngx := &proc{name: "nginx", role: roleNginx, cmd: pw.nginx.cmd}
	var echo *proc
	for _, p := range pw.infra {
		if p.name == "httpecho" {
			echo = p
		}
	}
	return pw.window(ctx, pw.nginxLoad, []*proc{pw.nginxLoad, echo, ngx})
}

// startProfiles fetches 90% of a window's CPU profile from the first
// federator and ingress (their FED_PPROF_ADDR, logged at start) in the
// background; the returned function waits for them.
func (pw *procWorld) startProfiles(ctx context.Context) func() error {
	secs := max(1, int((pw.cfg.Warmup+pw.cfg.Duration*9/10)/time.Second))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []*proc{pw.federators[0], pw.ingres[0]} {
		wg.Go(func() {
			addr, err := pprofAddr(p)
			if err == nil {
				err = fetchProfile(ctx, addr, secs, filepath.Join(pw.cfg.ProfileDir, strings.TrimSuffix(p.name, "-1")+".pprof"))
			}
			errs[i] = err
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// pprofAddr finds the debug listener's address in a process's log.
func pprofAddr(p *proc) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(p.log)
		for line := range strings.SplitSeq(string(data), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "pprof listening" {
				return rec.Addr, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("%s logged no pprof address", p.name)
}

func fetchProfile(ctx context.Context, addr string, secs int, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", addr, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// close stops every process and removes the directory.
func (pw *procWorld) close() error {
	pw.stopTopology()
	var errs []error
	if pw.nginx != nil {
		errs = append(errs, pw.nginx.stop(context.Background()))
	}
	pw.mu.Lock()
	running := slices.Clone(pw.running)
	pw.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range running {
		wg.Go(p.stop)
	}
	wg.Wait()
	if pw.dns != nil {
		errs = append(errs, pw.dns.Stop())
	}
	if pw.dir != "" {
		errs = append(errs, os.RemoveAll(pw.dir))
	}
	return errors.Join(errs...)
}

// printProcs prints the separate-process table.
func printProcs(out io.Writer, in ProcsRow, rows []ProcsRow, ngx ProcsRow, withNginx bool) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "topology\treq/s\tp50\tp99\terrors\tcores busy\treq/s per core\tCPU µs/req\tload\tcomponent\tnats\tfederators\tingresses\tnginx\treq/s vs in-process\t")
	inRPS := in.rps()
	line := func(r ProcsRow, perRole bool) {
		p50, _, p99 := latencySummary(r.Lat)
		n := r.Requests + r.Errors
		total := r.totalCPU()
		cores := total.Seconds() / r.Window.Seconds()
		perCore := r.rps() / cores
		perReq := func(d time.Duration) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", us(d/time.Duration(n)))
		}
		cols := []string{"-", "-", "-", "-", "-", "-"}
		if perRole {
			for i, role := range procRoles {
				if v, ok := r.CPU[role]; ok {
					cols[i] = perReq(v)
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%.2f\t%.0f\t%s\t%s\t%.2f×\t\n", r.Name, r.rps(), ms(p50), ms(p99), r.Errors, cores, perCore, perReq(total),
			strings.Join(cols, "\t"), r.rps()/inRPS)
	}
	line(in, false)
	for _, r := range rows {
		line(r, true)
	}
	if withNginx {
		line(ngx, true)
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "context switches per request	load	component	nats	federators	ingresses	")
	for _, r := range rows {
		n := float64(r.Requests + r.Errors)
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s	%.1f	%.1f	%.1f	%.1f	%.1f	\n", r.Name, float64(r.Switches[roleLoad])/n, float64(r.Switches[roleComponent])/n,
			float64(r.Switches[roleNATS])/n, float64(r.Switches[roleFederator])/n, float64(r.Switches[roleIngress])/n)
	}
	_ = tw.Flush()
	for _, r := range append([]ProcsRow{in, ngx}, rows...) {
		if r.FirstErr != "" {
			fmt.Fprintf(out, "first error of %s: %s\n", r.Name, r.FirstErr)
		}
	}
	fmt.Fprintln(out, "cores busy: CPU seconds of every process of the topology (/proc/<pid>/stat; in-process: getrusage) per second of the window;")
	fmt.Fprintln(out, "req/s per core = req/s ÷ cores busy; CPU µs/req by role: load client, echo component, nats-server A and B, fedbus processes, nginx.")
	if len(rows) > 0 {
		fed := func(r ProcsRow) time.Duration {
			n := r.Requests + r.Errors
			if n == 0 {
				return 0
			}
			return (r.CPU[roleFederator] + r.CPU[roleIngress]) / time.Duration(n)
		}
		base := fed(rows[0])
		var parts []string
		for _, r := range rows {
			parts = append(parts, fmt.Sprintf("%d: %.1f µs (%.2f×)", r.Workers, us(fed(r)), float64(fed(r))/float64(base)))
		}
		fmt.Fprintf(out, "federator + ingress CPU per request by worker count: %s\n", strings.Join(parts, ", "))
		if withNginx && ngx.rps() > 0 {
			fmt.Fprintf(out, "separate processes (%d workers) / nginx single hop: %.2f×\n", rows[0].Workers, rows[0].rps()/ngx.rps())
		}
	}
	fmt.Fprintln(out)
}
