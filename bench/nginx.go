package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// nginxConf is the configuration of the nginx scenario: mutual TLS 1.3
// with HTTP/2 on 127.0.0.1, proxying to the Go echo over HTTP/1.1 with
// keep-alive connections. Everything (pid, logs, temporary files) is under
// the prefix directory. The buffers hold a 64 KiB request and response in
// memory.
var nginxConf = template.Must(template.New("nginx.conf").Parse(`# written by fedbench
worker_processes auto;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;

    upstream echo {
        server {{.Upstream}};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen {{.Listen}} ssl http2;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_protocols TLSv1.3;
        ssl_client_certificate {{.CA}};
        ssl_verify_client on;
        ssl_verify_depth 2;

        http2_max_concurrent_streams 250;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
        client_max_body_size 2m;
        client_body_buffer_size 128k;

        location /federation/ {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
            proxy_set_header X-SSL-Client-S-DN $ssl_client_s_dn;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
`))

// nginxParams fill nginxConf.
type nginxParams struct {
	Dir, Listen, Upstream, Cert, Key, CA string
}

// nginxProc is a running nginx master process (in its own process group)
// and its workers.
type nginxProc struct {
	cmd    *exec.Cmd
	dir    string
	done   chan struct{} // closed when the master has exited
	waitMu sync.Mutex
	err    error // the master's exit status, set before done is closed
	stderr bytes.Buffer
}

// findNginx returns the nginx binary: path when given, else nginx in PATH
// or /usr/sbin/nginx; "" when there is none.
func findNginx(path string) string {
	if path != "" {
		return path
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if st, err := os.Stat("/usr/sbin/nginx"); err == nil && !st.IsDir() {
		return "/usr/sbin/nginx"
	}
	return ""
}

// nginxScenario starts the Go HTTP/1.1 echo and nginx in front of it. It
// returns a skipped scenario when nginx is not installed.
func (w *world) nginxScenario(ctx context.Context, path string) (*scenario, string, error) {
	bin := findNginx(path)
	if bin == "" {
		return &scenario{name: ScenarioNginx, skip: "nginx is not installed (apt-get install nginx-light, or -nginx PATH)"}, "", nil
	}
	version := nginxVersion(ctx, bin)
	upstream, err := w.serveHTTP(&http.Server{
		Handler:           http.HandlerFunc(httpEcho),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       300 * time.Second,
	})
	if err != nil {
		return nil, "", err
	}
	listen, err := freePort()
	if err != nil {
		return nil, "", err
	}
	// The workers run as an unprivileged user when we are root: the
	// prefix directory must be searchable for them (the key is read by
	// the master before it drops privileges, and stays 0600).
	dir, err := os.MkdirTemp("", "fedbench-nginx-")
	if err != nil {
		return nil, "", fmt.Errorf("nginx dir: %w", err)
	}
	w.onClose(func(context.Context) error { return os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("nginx dir: %w", err)
	}
	p, err := startNginx(ctx, bin, dir, nginxParams{
		Dir: dir, Listen: listen, Upstream: upstream,
		Cert: w.b.Files.Cert, Key: w.b.Files.Key, CA: w.b.Files.CA,
	})
	if err != nil {
		return nil, "", err
	}
	w.onClose(p.stop)
	sc := httpScenario(ScenarioNginx, w.h2Client(), "https://"+listen+echoPath)
	pid := p.cmd.Process.Pid
	sc.extCPU = func() (time.Duration, error) { return treeCPU(pid) }
	return sc, version, nil
}

// nginxVersion returns the first line of "nginx -v".
func nginxVersion(ctx context.Context, bin string) string {
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(vctx, bin, "-v").CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// freePort returns a 127.0.0.1 address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	return addr, nil
}

// startNginx writes the configuration into dir, starts nginx in the
// foreground in its own process group and waits until it accepts
// connections.
func startNginx(ctx context.Context, bin, dir string, params nginxParams) (*nginxProc, error) {
	var conf bytes.Buffer
	if err := nginxConf.Execute(&conf, params); err != nil {
		return nil, fmt.Errorf("nginx.conf: %w", err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("nginx.conf: %w", err)
	}
	p := &nginxProc{dir: dir, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off;")
	p.cmd.Stdout = &p.stderr
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // the workers share the master's group: stop kills the group
		Pdeathsig: syscall.SIGKILL, // the master dies with fedbench
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() {
		err := p.cmd.Wait()
		p.waitMu.Lock()
		p.err = err
		p.waitMu.Unlock()
		close(p.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", params.Listen, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("nginx exited at start: %v: %s%s", p.exitErr(), p.stderr.String(), p.errorLog())
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), p.stop(context.Background()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("nginx does not listen on %s after 10s%s", params.Listen, p.errorLog()), p.stop(context.Background()))
		}
	}
}

func (p *nginxProc) exitErr() error {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	return p.err
}

// errorLog returns the end of nginx's error log, for error messages.
func (p *nginxProc) errorLog() string {
	data, err := os.ReadFile(filepath.Join(p.dir, "error.log"))
	if err != nil || len(data) == 0 {
		return ""
	}
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return "\nerror.log:\n" + string(data)
}

// stop asks nginx to quit gracefully (SIGQUIT), and kills its process
// group when it has not exited within 5 seconds or ctx's end.
func (p *nginxProc) stop(ctx context.Context) error {
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(pid, syscall.SIGQUIT)
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	// Whatever is left of the group (workers of a killed master) goes.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill nginx group %d: %w", pid, err)
	}
	<-p.done
	return nil
}
