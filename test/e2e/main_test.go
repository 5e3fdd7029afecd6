package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/fedtest"
)

// helperEnv, set to "federator", makes the test binary run as a federator
// process (the production wiring, setup.Run, with the environment's
// configuration) instead of the tests: the tests that kill a federator
// with SIGKILL start their federators that way.
const helperEnv = "FEDBUS_E2E_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "federator" {
		cfg := federator.NewConfig()
		os.Exit(setup.Run("federator", nil, &cfg, func(sh *setup.Shared, log *slog.Logger) (setup.Service, error) {
			return federator.New(cfg, federator.Deps{NATS: sh.NATS, JetStream: sh.JetStream, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: log})
		}))
	}
	os.Exit(m.Run())
}

// federatorProcess is a federator running as a process of its own.
type federatorProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startFederatorProcess starts a federator process of be (its
// environment, plus extra) and stops it (SIGTERM, then SIGKILL) when the
// test ends.
func startFederatorProcess(tb testing.TB, be *fedtest.Backend, extra map[string]string) *federatorProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=federator", "FED_LOG_FORMAT=text", "FED_LOG_LEVEL=info")
	for _, env := range []map[string]string{be.Env, extra} {
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stdout = io.Discard
	cmd.Stderr = io.Discard
	if os.Getenv("FEDBUS_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &federatorProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// pid is the process id.
func (p *federatorProcess) pid() int { return p.cmd.Process.Pid }

// kill ends the process with SIGKILL and waits for it.
func (p *federatorProcess) kill(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		tb.Fatal("killed federator did not exit")
	}
}

// holderPID returns the process id in a lease holder's name
// (host/pid/random).
func holderPID(holder string) int {
	parts := strings.Split(holder, "/")
	if len(parts) != 3 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[1])
	return pid
}

// withTimeout is a context for one step of a test.
func withTimeout(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}
