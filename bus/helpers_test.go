package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
	"github.com/nats-io/nats.go"
)

// startNATS starts an in-process NATS server for the test and returns its URL.
func startNATS(tb testing.TB) string {
	tb.Helper()
	s, err := testbed.StartNATS("")
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// connect opens a NATS connection that is closed when the test ends.
func connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.Name(tb.Name()))
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// discardLogger is a logger for servers under test.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitFor polls cond until it holds or the timeout ends.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// testCtx returns a context bounded by timeout and cancelled with the test.
func testCtx(tb testing.TB, timeout time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	tb.Cleanup(cancel)
	return ctx
}

// wantBusError checks that err is a *contract.Error matching target, with the
// label's status, and returns it.
func wantBusError(tb testing.TB, err error, target *contract.Error) *contract.Error {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("error = %v, want %s", err, target.Label)
	}
	e := contract.AsError(err)
	if e.Code != target.Code {
		tb.Errorf("error code = %d, want %d", e.Code, target.Code)
	}
	return e
}

// newSubjects returns the subjects of prefix, failing the test on error.
func newSubjects(tb testing.TB, prefix string) contract.Subjects {
	tb.Helper()
	s, err := contract.NewSubjects(prefix)
	if err != nil {
		tb.Fatalf("NewSubjects(%q): %v", prefix, err)
	}
	return s
}
