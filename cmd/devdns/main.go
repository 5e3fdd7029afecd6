// Command devdns is a small authoritative DNS server for development,
// docker-compose and the integration tests: it answers UDP and TCP queries
// from the records of one zone file (RFC 1035 master file format, SRV, A,
// AAAA and any other type miekg/dns parses). Unknown names get NXDOMAIN,
// known names without the asked type NODATA, both with an SOA (the zone's,
// or a synthesised one with a 30 s negative TTL). SIGHUP reloads the zone
// file; an invalid file keeps the records served before.
//
// Usage:
//
//	devdns [-listen 127.0.0.1:10053] [-zone /etc/fedbus/example.zone] [-origin .]
//
// Flags default to the environment variables DEVDNS_LISTEN, DEVDNS_ZONE,
// DEVDNS_ORIGIN and FED_LOG_LEVEL (debug logs every query).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/internal/version"
)

// shutdownTimeout bounds the graceful stop.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	os.Exit(run(ctx, os.Args[1:], os.Getenv, hup, os.Stderr))
}

// options are devdns's settings.
type options struct {
	listen, zone, origin, level string
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (options, error) {
	def := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	var o options
	fs := flag.NewFlagSet("devdns", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.listen, "listen", def("DEVDNS_LISTEN", "127.0.0.1:10053"), "UDP and TCP listen address (env DEVDNS_LISTEN)")
	fs.StringVar(&o.zone, "zone", def("DEVDNS_ZONE", ""), "zone file to serve, required (env DEVDNS_ZONE)")
	fs.StringVar(&o.origin, "origin", def("DEVDNS_ORIGIN", "."), "origin of relative names in the zone file (env DEVDNS_ORIGIN)")
	fs.StringVar(&o.level, "log-level", def("FED_LOG_LEVEL", "info"), "debug, info, warn or error (env FED_LOG_LEVEL)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *showVersion {
		fmt.Fprintln(out, version.Line("devdns"))
		return o, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.zone == "" {
		return o, errors.New("a zone file is required (-zone or DEVDNS_ZONE)")
	}
	return o, nil
}

// run serves until ctx ends; it returns the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, hup <-chan os.Signal, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "devdns:", err)
		return 2
	}
	level, err := config.ParseLevel(o.level)
	if err != nil {
		fmt.Fprintln(stderr, "devdns:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	zone, err := LoadZoneFile(o.zone, o.origin)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	srv := NewServer(zone, log)
	if err := srv.Start(o.listen); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	log.Info("devdns serving", "addr", srv.Addr(), "zone", o.zone, "records", zone.Len())
	code := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			z, err := LoadZoneFile(o.zone, o.origin)
			if err != nil {
				log.Error("reload failed, serving the previous zone", "err", err)
				continue
			}
			srv.SetZone(z)
			log.Info("zone reloaded", "records", z.Len())
		case err := <-srv.Errors():
			log.Error("serve failed", "err", err)
			code = 1
			break loop
		}
	}
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	return code
}
