// Command federator runs the outbound federator workers of fedbus: it takes
// components' requests from NATS and calls remote backends over mutual TLS.
// It is configured through the environment (-h lists the variables).
package main

import (
	"log/slog"
	"os"

	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/setup"
)

func main() {
	cfg := federator.NewConfig()
	os.Exit(setup.Run("federator", os.Args[1:], &cfg, func(sh *setup.Shared, log *slog.Logger) (setup.Service, error) {
		return federator.New(cfg, federator.Deps{NATS: sh.NATS, Objects: sh.Objects, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: log, Metrics: sh.Metrics, JetStream: sh.JetStream})
	}))
}
