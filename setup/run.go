package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/ingress"
	"github.com/fedbus/fedbus/internal/version"
	"github.com/fedbus/fedbus/ops"
	"github.com/fedbus/fedbus/tracing"
)

// closeTimeout bounds the final NATS drain, after the requests are done.
const closeTimeout = 5 * time.Second

// forcedTimeout bounds what a second signal still waits for.
const forcedTimeout = time.Second

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

// Checker is a Service with readiness checks of its own, added to
// /readyz after those of the shared services.
type Checker interface {
	Checks() []ops.Check
}

// Endpointer is a Service whose serve loops NATS service discovery shows
// with their counts (Announce).
type Endpointer interface {
	Endpoints() []bus.ServiceEndpoint
}

// HealthcheckFlag makes a binary probe /readyz of the process on
// FED_OPS_ADDR of the same host and exit 0 (ready) or 1: the health check
// of images without a shell or curl (docker-compose).
const HealthcheckFlag = "-healthcheck"

// Build makes the binary's service from the shared services and the
// process logger.
type Build func(sh *Shared, log *slog.Logger) (Service, error)

// Known returns the variables of every fedbus service binary: in an
// environment shared by the federator and the ingress, the other's
// variables are not mistakes.
func Known() []string {
	f, i := federator.NewConfig(), ingress.NewConfig()
	known := slices.Concat(config.Variables(&f), config.Variables(&i))
	slices.Sort(known)
	return slices.Compact(known)
}

// Run is the whole life of a fedbus binary:
//
//   - it reads cfg (holding its defaults) from the environment (-h lists
//     the variables on stdout, -version prints the version); an invalid
//     configuration, or a FED_* variable that is a typo of a known one,
//     is refused with one line per mistake;
//   - it logs one start-up line with the version and every effective
//     setting (no secret), and a warning for each setting that is
//     suspicious but may be intended;
//   - it opens the shared services and refuses to start what would make
//     every request fail (certificate expired or not valid yet, our SRV
//     record missing or not naming our certificate, NATS permissions
//     refusing the process its inbox or subscriptions);
//   - it serves the operations endpoints on FED_OPS_ADDR (/livez, /readyz,
//     /metrics) from the start, and exports traces when the OTEL_*
//     variables ask for it;
//   - it builds and starts the service, answers NATS service discovery,
//     and waits: SIGHUP reloads the certificate files and the dynamic
//     configuration; SIGINT or SIGTERM (or the service's failure) stops
//     it gracefully (/readyz turns 503, no new requests, those in flight finish within
//     FED_SHUTDOWN_TIMEOUT, the NATS connection is drained), and a second
//     SIGINT or SIGTERM stops it at once.
//
// It returns the process's exit code: 0, 1 when starting failed or was
// refused, stopping failed or a second signal cut it short, 2 for an
// invalid configuration.
func Run(prog string, args []string, cfg Config, build Build) int {
	if len(args) == 1 && args[0] == HealthcheckFlag {
		return healthcheck(prog, cfg.Base().OpsAddr)
	}
	// Signals are handled from the start: SIGHUP must not kill a process
	// that is starting.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	warnings, err := config.FromEnv(context.Background(), config.Command{Prog: prog, Args: args, Out: os.Stdout, Known: Known()}, cfg)
	switch {
	case errors.Is(err, config.ErrHelp), errors.Is(err, config.ErrVersion):
		return 0
	case err != nil:
		fmt.Fprintln(os.Stderr, prog+":", err)
		return 2
	}
	c := cfg.Base()
	log := c.Logger(os.Stderr)
	log.LogAttrs(context.Background(), slog.LevelInfo, "starting "+prog,
		append([]slog.Attr{slog.String("version", version.String())}, config.Settings(cfg)...)...)
	for _, w := range warnings {
		log.Warn(w)
	}
	stopTracing, err := startTracing(context.Background(), prog, c.Domain, log)
	if err != nil {
		log.Error("start refused", "err", err)
		return 1
	}
	defer stopTracing()
	logRuntime(log, TuneRuntime(os.Getenv))
	if c.PprofAddr != "" {
		d, err := startDebug(c.PprofAddr, log)
		if err != nil {
			log.Error("start failed", "err", err)
			return 1
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = d.stop(dctx)
		}()
	}
	// An unset FED_KV_BUCKET is the default bucket, which may not exist
	// yet: it is waited for. One the operator named must exist.
	_, named := os.LookupEnv("FED_KV_BUCKET")
	shared, err := open(*c, prog+" "+c.Domain, log, !named)
	if err != nil {
		log.Error("start refused", "err", err)
		return 1
	}
	code := serve(prog, c, shared, build, sigs, log)
	drain := closeTimeout
	if code == exitForced {
		code, drain = 1, 0 // no drain: the operator asked to stop now
	}
	cctx, cancelClose := context.WithTimeout(context.Background(), drain)
	defer cancelClose()
	if err := shared.Close(cctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	log.Info("stopped", "exit_code", code)
	return code
}

// exitForced is serve's result when a second signal cut the shutdown
// short (Run exits with 1 without draining NATS).
const exitForced = -1

// serve checks the start, runs the service until a signal or its failure
// and stops it: the exit code.
func serve(prog string, c *config.Common, shared *Shared, build Build, sigs <-chan os.Signal, log *slog.Logger) int {
	if err := preflight(context.Background(), c, shared, log); err != nil {
		log.Error("start refused", "err", err)
		return 1
	}
	warnAllowList(c, shared, log)
	var opsSrv *ops.Server
	var started atomic.Bool
	if c.OpsAddr != "" {
		opsSrv = ops.New(shared.Metrics.Registry(), log.With("component", "ops"))
		for _, ch := range shared.Checks() {
			opsSrv.AddCheck(ch.Name, ch.Run)
		}
		opsSrv.AddCheck(prog, func(context.Context) error {
			if !started.Load() {
				return errors.New("starting")
			}
			return nil
		})
		// Served from the start: /livez answers while the service starts.
		if err := opsSrv.Start(c.OpsAddr); err != nil {
			log.Error("start refused", "err", err)
			return 1
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			if err := opsSrv.Shutdown(sctx); err != nil {
				log.Warn("shutdown", "err", err)
			}
		}()
	}
	// Requests in flight get their own context: a signal stops taking new
	// ones and lets these finish (bounded by FED_SHUTDOWN_TIMEOUT).
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	svc, err := build(shared, log)
	if err == nil {
		err = svc.Start(work)
	}
	if err == nil {
		err = checkPermissions(shared.NATS)
		if err != nil {
			stopNow(svc, log)
		}
	}
	if err != nil {
		log.Error("start refused", "err", err)
		return 1
	}
	if ck, ok := svc.(Checker); ok && opsSrv != nil {
		for _, ch := range ck.Checks() {
			opsSrv.AddCheck(ch.Name, ch.Run)
		}
	}
	started.Store(true)
	var endpoints []bus.ServiceEndpoint
	if e, ok := svc.(Endpointer); ok {
		endpoints = e.Endpoints()
	}
	if ann, err := Announce(shared.NATS, prog, c, endpoints); err != nil {
		log.Warn("fedctl cannot see this process (it cannot warn when no service watches the bucket it writes)", "err", err)
	} else {
		defer func() { _ = ann.Stop() }()
	}
	log.Info("ready: SIGHUP reloads the certificates and the dynamic configuration; SIGINT or SIGTERM stops (a second one at once)")
	var failed <-chan error
	if f, ok := svc.(Failer); ok {
		failed = f.Failed()
	}
	code := 0
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				log.Info("SIGHUP: reloading")
				shared.Reload(log)
				continue
			}
			log.Info("stopping", "signal", s.String(), "timeout", c.ShutdownTimeout.String())
			break wait
		case err := <-failed:
			log.Error("serve failed", "err", err)
			log.Info("stopping", "timeout", c.ShutdownTimeout.String())
			code = 1
			break wait
		}
	}
	// Not ready before draining: load balancers and Kubernetes stop
	// sending work while the requests in flight finish.
	if opsSrv != nil {
		opsSrv.SetStopping()
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Shutdown(sctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("shutdown", "err", err)
				code = 1
			}
			return code
		case s := <-sigs:
			if s == syscall.SIGHUP {
				log.Info("SIGHUP ignored: stopping")
				continue
			}
			log.Warn("second signal: stopping now, requests in flight are cut off", "signal", s.String())
			cancel()
			cancelWork()
			select {
			case <-done:
			case <-time.After(forcedTimeout):
			}
			return exitForced
		}
	}
}

// checkPermissions reports a subscription the NATS server refused since
// the connection was made (the federator's fed.out.> in its queue group,
// with another user's credentials): refused at start rather than serving
// nothing.
func checkPermissions(nc *nats.Conn) error {
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("check NATS permissions: %w", err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("the NATS server refuses this process what it needs (check FED_NATS_USER or the credentials, and the user's permissions, deploy/nats/fedbus.conf): %w", err)
	}
	return nil
}

// stopNow stops a service that must not serve.
func stopNow(svc Service, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), forcedTimeout)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		log.Debug("stop", "err", err)
	}
}

// healthcheck probes /readyz on addr (FED_OPS_ADDR, from the environment
// when set) and returns the exit code: 0 when ready, 1 otherwise.
func healthcheck(prog, addr string) int {
	if v, ok := os.LookupEnv("FED_OPS_ADDR"); ok {
		addr = v
	}
	if addr == "" {
		fmt.Fprintln(os.Stderr, prog+": FED_OPS_ADDR is empty: no /readyz to probe")
		return 1
	}
	url, err := ops.ProbeURL(addr, ops.PathReady)
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := ops.Probe(ctx, url)
	fmt.Fprint(os.Stdout, body)
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		return 1
	}
	return 0
}

// startTracing turns OpenTelemetry tracing on when the OTEL_* variables
// ask for it (tracing.Setup) and returns what stops it.
func startTracing(ctx context.Context, prog, domain string, log *slog.Logger) (func(), error) {
	stop, on, err := tracing.Setup(ctx, "fedbus-"+prog, attribute.String("fedbus.domain", domain))
	if err != nil {
		return nil, err
	}
	if on {
		log.Info("tracing on: spans exported with OTLP (OTEL_* variables)")
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := stop(sctx); err != nil {
			log.Warn("tracing: flush", "err", err)
		}
	}, nil
}
