// Command ingress runs the inbound side of fedbus: an HTTPS server that
// authenticates remote backends by their client certificate and DNS SRV
// records and forwards their requests to local components over NATS. It is
// configured through the environment (-h lists the variables).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/ingress"
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
	var cfg ingress.Config
	if err := config.FromEnv(ctx, "ingress", os.Args[1:], &cfg, os.Stderr); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "ingress:", err)
		return 2
	}
	log := cfg.Logger(os.Stderr)
	shared, err := setup.Open(cfg.Common, "ingress "+cfg.Domain, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	in, err := ingress.New(cfg, ingress.Deps{NATS: shared.NATS, Resolver: shared.Resolver, Policy: shared.Policy, Certs: shared.Certs, Logger: log})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- in.ListenAndServe() }()
	code := 0
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve failed", "err", err)
			code = 1
		}
	}
	log.Info("stopping", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := in.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	cctx, cancelClose := context.WithTimeout(context.Background(), closeTimeout)
	defer cancelClose()
	if err := shared.Close(cctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	return code
}
