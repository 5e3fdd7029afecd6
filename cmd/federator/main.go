// Command federator runs the outbound federator workers of fedbus: it takes
// components' requests from NATS and calls remote backends over mutual TLS.
// It is configured through the environment (-h lists the variables).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/setup"
)

// closeTimeout bounds the final NATS drain, after the requests are done.
const closeTimeout = 5 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg federator.Config
	if err := config.FromEnv(ctx, "federator", os.Args[1:], &cfg, os.Stderr); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "federator:", err)
		return 2
	}
	log := cfg.Logger(os.Stderr)
	shared, err := setup.Open(cfg.Common, "federator "+cfg.Domain, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	// Requests in flight get their own context: a signal stops taking new
	// ones and lets these finish (bounded by FED_SHUTDOWN_TIMEOUT).
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	f, err := federator.New(cfg, federator.Deps{NATS: shared.NATS, Resolver: shared.Resolver, Policy: shared.Policy, Certs: shared.Certs, Logger: log})
	if err == nil {
		err = f.Start(work)
	}
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	<-ctx.Done()
	log.Info("stopping", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	code := 0
	if err := f.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
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
