// Command ingress runs the inbound side of fedbus: an HTTPS server that
// authenticates remote backends by their client certificate and DNS SRV
// records and forwards their requests to local components over NATS. It is
// configured through the environment (-h lists the variables).
package main

import (
	"log/slog"
	"os"

	"github.com/fedbus/fedbus/ingress"
	"github.com/fedbus/fedbus/setup"
)

func main() {
	cfg := ingress.NewConfig()
	os.Exit(setup.Run("ingress", os.Args[1:], &cfg, func(sh *setup.Shared, log *slog.Logger) (setup.Service, error) {
		return ingress.New(cfg, ingress.Deps{NATS: sh.NATS, Objects: sh.Objects, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: log, Metrics: sh.Metrics, JetStream: sh.JetStream})
	}))
}
