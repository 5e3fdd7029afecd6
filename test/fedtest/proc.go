package fedtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// Binaries are the programs of a backend whose services run as processes
// of their own (StartProcBackend): the production federator and ingress,
// and nats-server.
type Binaries struct {
	Federator, Ingress, NATSServer string
}

// BuildBinaries builds cmd/federator, cmd/ingress and nats-server (the
// version of go.mod) into dir with go build, without the race detector:
// the processes a test measures are the production binaries.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("build binaries: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"./cmd/federator", "./cmd/ingress", "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("build binaries: %w\n%s", err, out)
	}
	return Binaries{
		Federator:  filepath.Join(dir, "federator"),
		Ingress:    filepath.Join(dir, "ingress"),
		NATSServer: filepath.Join(dir, "nats-server"),
	}, nil
}

// Proc is a child process: a fedbus binary or nats-server.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has ended
	err  error         // its exit status, once done

	mu    sync.Mutex
	lines []map[string]any // the JSON log lines seen so far
	seen  chan struct{}    // closed and replaced at each line
}

// startProc starts bin with exactly env (nothing of this process's
// environment) and copies its standard error to logs (nil: discarded),
// keeping the JSON lines for Wait.
func startProc(name, bin string, args []string, env map[string]string, logs io.Writer) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{}), seen: make(chan struct{})}
	go func() {
		p.read(stderr, logs)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// read copies the process's log lines to logs and keeps the JSON ones.
func (p *Proc) read(r io.Reader, logs io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if logs != nil {
			fmt.Fprintf(logs, "[%s] %s\n", p.Name, sc.Bytes())
		}
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		p.mu.Lock()
		p.lines = append(p.lines, m)
		close(p.seen)
		p.seen = make(chan struct{})
		p.mu.Unlock()
	}
}

// Wait returns the first JSON log line whose "msg" is msg, waiting for it
// until ctx ends or the process does.
func (p *Proc) Wait(ctx context.Context, msg string) (map[string]any, error) {
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if p.lines[i]["msg"] == msg {
				line := p.lines[i]
				p.mu.Unlock()
				return line, nil
			}
		}
		seen := p.seen
		p.mu.Unlock()
		select {
		case <-seen:
		case <-p.done:
			return nil, fmt.Errorf("%s ended before logging %q: %v", p.Name, msg, p.err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not log %q: %w", p.Name, msg, ctx.Err())
		}
	}
}

// Lines returns the JSON log lines whose "msg" is msg, so far.
func (p *Proc) Lines(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, l := range p.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Status returns a field of /proc/<pid>/status in KiB, e.g. VmHWM (the
// peak resident set) or VmRSS.
func (p *Proc) Status(field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("%s status: %w", p.Name, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _, _ := strings.Cut(strings.TrimSpace(v), " ")
			return strconv.ParseInt(kb, 10, 64)
		}
	}
	return 0, fmt.Errorf("%s status: no field %s", p.Name, field)
}

// Stop ends the process with SIGTERM (its graceful shutdown), or SIGKILL
// when ctx ends first.
func (p *Proc) Stop(ctx context.Context) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("stop %s: %w", p.Name, ctx.Err())
	}
	var ee *exec.ExitError
	if p.err != nil && !(errors.As(p.err, &ee) && ee.ExitCode() == 0) {
		return fmt.Errorf("stop %s: %w", p.Name, p.err)
	}
	return nil
}

// ProcBackend is a backend whose NATS server, federator and ingress are
// processes of their own, the production binaries (the components run in
// the caller's process, on NATS).
type ProcBackend struct {
	Domain      string
	NATSURL     string
	NATS        *nats.Conn // a connection for local components
	Subjects    contract.Subjects
	NATSServer  *Proc
	Federator   *Proc
	Ingress     *Proc
	IngressAddr string
	Files       testbed.Files // the backend's certificate, key and CA files
}

// procStartTimeout bounds the start of each process.
const procStartTimeout = 30 * time.Second

// StartProcBackend starts a backend of processes from bin: nats-server
// with JetStream on file storage and its default limits, then the
// federator and the ingress, configured from opts as StartBackend does
// (Domain, InfraHost, CA, DNS, Dir, Strategy, AllowList, Components,
// RequestTimeout, MaxBodyBytes, Env; the others do not apply). Their logs
// (JSON) go to logs. Close stops them.
func StartProcBackend(ctx context.Context, opts BackendOptions, bin Binaries, logs io.Writer) (_ *ProcBackend, err error) {
	b := &ProcBackend{Domain: opts.Domain}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Close(cctx)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, procStartTimeout)
	defer cancel()
	dir, err := os.MkdirTemp(opts.Dir, "proc-")
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if b.NATSServer, b.NATSURL, err = startNATSProc(ctx, bin.NATSServer, dir, logs); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	env, files, err := backendEnv(&opts, b.NATSURL)
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.Files = files
	env["FED_LOG_FORMAT"], env["FED_LOG_LEVEL"] = "json", "info"
	if b.Subjects, err = contract.NewSubjects(contract.DefaultPrefix); err != nil {
		return nil, err
	}
	// The backend's own SRV record first: each binary checks at start that
	// it points at a name of its certificate. The ingress gets a port
	// picked now.
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	opts.DNS.SetSRV(opts.Domain, 60, testbed.SRVRecord{Target: opts.InfraHost, Port: port, Priority: 10, Weight: 5})
	if err := opts.DNS.SetA(opts.InfraHost, 60, "127.0.0.1"); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if b.Federator, err = startProc("federator "+opts.Domain, bin.Federator, nil, env, logs); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if _, err := b.Federator.Wait(ctx, "federator started"); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	env["FED_INGRESS_ADDR"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	if b.Ingress, err = startProc("ingress "+opts.Domain, bin.Ingress, nil, env, logs); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	line, err := b.Ingress.Wait(ctx, "serving")
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.IngressAddr, _ = line["addr"].(string)
	if b.NATS, err = nats.Connect(b.NATSURL, nats.Name("components "+opts.Domain)); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	return b, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (uint16, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer func() { _ = ln.Close() }()
	return uint16(ln.Addr().(*net.TCPAddr).Port), nil
}

// startNATSProc starts nats-server on a free loopback port with JetStream
// stored under dir, and returns it with its client URL.
func startNATSProc(ctx context.Context, bin, dir string, logs io.Writer) (*Proc, string, error) {
	p, err := startProc("nats-server", bin, []string{"-a", "127.0.0.1", "-p", "-1", "-js", "-sd", filepath.Join(dir, "jetstream"), "--ports_file_dir", dir}, nil, logs)
	if err != nil {
		return nil, "", err
	}
	ports := filepath.Join(dir, filepath.Base(bin)+"_"+strconv.Itoa(p.cmd.Process.Pid)+".ports")
	for {
		if b, err := os.ReadFile(ports); err == nil {
			var info struct {
				Nats []string `json:"nats"`
			}
			if json.Unmarshal(b, &info) == nil && len(info.Nats) > 0 {
				return p, info.Nats[0], nil
			}
		}
		select {
		case <-p.done:
			return nil, "", fmt.Errorf("nats-server ended at start: %v", p.err)
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			return nil, "", fmt.Errorf("nats-server: no ports file: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Client returns a component client of this backend.
func (b *ProcBackend) Client(source string) *bus.Client {
	return bus.NewClient(b.NATS, b.Subjects, source)
}

// Close stops the ingress, the federator (SIGTERM) and nats-server.
func (b *ProcBackend) Close(ctx context.Context) error {
	var errs []error
	if b.NATS != nil {
		b.NATS.Close()
	}
	for _, p := range []*Proc{b.Ingress, b.Federator, b.NATSServer} {
		if p != nil {
			if err := p.Stop(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
