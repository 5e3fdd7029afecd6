package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/config"
)

// closeTimeout bounds the final NATS drain, after the requests are done.
const closeTimeout = 5 * time.Second

// Config is a binary's configuration: it validates and normalises itself
// (config.Validator) and holds the common part (config.Common, whose Base
// method it gets by embedding).
type Config interface {
	config.Validator
	Base() *config.Common
}

// Service is what a binary runs: the federator or the ingress.
type Service interface {
	// Start starts serving and returns once it does. Requests in flight
	// use ctx, which Run cancels after Shutdown.
	Start(ctx context.Context) error
	// Shutdown stops taking requests and lets those in flight finish,
	// bounded by ctx.
	Shutdown(ctx context.Context) error
}

// Failer is a Service that can fail while it runs (the ingress's listener):
// Run stops when Failed delivers an error.
type Failer interface {
	Failed() <-chan error
}

// Build makes the binary's service from the shared services and the
// process logger.
type Build func(sh *Shared, log *slog.Logger) (Service, error)

// Run is the whole life of a fedbus binary: it reads cfg (holding its
// defaults) from the environment (-h lists the variables on stdout), opens
// the shared services, builds and starts the service, waits for SIGINT or
// SIGTERM (or the service's failure), then shuts down gracefully: no new
// requests, those in flight finish within FED_SHUTDOWN_TIMEOUT, the NATS
// connection is drained. It returns the process's exit code: 0, 1 when
// starting or stopping failed, 2 for an invalid configuration.
func Run(prog string, args []string, cfg Config, build Build) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := config.FromEnv(ctx, prog, args, cfg, os.Stdout); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, prog+":", err)
		return 2
	}
	c := cfg.Base()
	log := c.Logger(os.Stderr)
	shared, err := Open(*c, prog+" "+c.Domain, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	// Requests in flight get their own context: a signal stops taking new
	// ones and lets these finish (bounded by FED_SHUTDOWN_TIMEOUT).
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	code := 0
	svc, err := build(shared, log)
	if err == nil {
		err = svc.Start(work)
	}
	if err != nil {
		log.Error("start failed", "err", err)
		code = 1
	} else {
		var failed <-chan error
		if f, ok := svc.(Failer); ok {
			failed = f.Failed()
		}
		select {
		case <-ctx.Done():
		case err := <-failed:
			log.Error("serve failed", "err", err)
			code = 1
		}
		log.Info("stopping", "timeout", c.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
		defer cancel()
		if err := svc.Shutdown(sctx); err != nil {
			log.Error("shutdown", "err", err)
			code = 1
		}
	}
	cancelWork()
	cctx, cancelClose := context.WithTimeout(context.Background(), closeTimeout)
	defer cancelClose()
	if err := shared.Close(cctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	return code
}
