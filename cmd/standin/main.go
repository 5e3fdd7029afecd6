// Command standin is a stand-in wire-server component for docker-compose
// and the integration tests.
//
//	standin [serve]
//	standin call [-timeout 10s] [-retry-for 0s] [-sha256] <target-domain> <component> <rpc> <json-body>
//
// serve (the default) answers federated requests to STANDIN_COMPONENT
// (default brig) from remote backends, through bus.Serve:
// get-user-by-handle (body: a JSON string handle; the profile of alice, bob
// or carol of FED_DOMAIN, null for any other handle), echo (answers the
// body), slow (body: milliseconds to sleep before answering) and
// stream-asset, as cargohold (body: {"key": "...", "size": bytes}; the
// answer is a generated asset of that size, application/octet-stream,
// streamed through the JetStream object store, contract section 8).
//
// call sends one federated request from this backend, as a local component
// would, and writes the remote component's response to stdout (a streamed
// answer as it is read, chunk by chunk); with -sha256 it prints the SHA-256,
// size and media type of the response instead. A failure prints the
// contract's error JSON on stderr and exits 1; -retry-for keeps retrying
// failures for that long (for scripts waiting for a stack).
//
// Both read FED_NATS_URL and FED_SUBJECT_PREFIX; serve also FED_DOMAIN and
// STANDIN_COMPONENT. Logs are JSON on stderr (FED_LOG_LEVEL).
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

	"github.com/nats-io/nats.go"
	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/internal/version"
)

// shutdownTimeout bounds the graceful stop of serve.
const shutdownTimeout = 10 * time.Second

// retryInterval is the pause between the attempts of call -retry-for.
const retryInterval = 500 * time.Millisecond

// BusConfig is the part of the configuration both modes read (exported,
// like ServeConfig, so that go-envconfig fills the embedded struct).
type BusConfig struct {
	NATSURL       string `env:"FED_NATS_URL, default=nats://127.0.0.1:4222" desc:"NATS server(s), comma-separated"`
	NATSInOrder   bool   `env:"FED_NATS_IN_ORDER" desc:"connect to the servers of FED_NATS_URL in the order given instead of in random order"`
	SubjectPrefix string `env:"FED_SUBJECT_PREFIX, default=fed" desc:"first subject token"`
	LogLevel      string `env:"FED_LOG_LEVEL, default=info" desc:"debug, info, warn or error"`
}

// ServeConfig is the configuration of serve.
type ServeConfig struct {
	BusConfig
	Domain    string `env:"FED_DOMAIN" desc:"this backend's domain (required)"`
	Component string `env:"STANDIN_COMPONENT, default=brig" desc:"component served"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], envconfig.OsLookuper(), os.Stdout, os.Stderr))
}

// run dispatches to the mode named by args[0] and returns the exit status.
func run(ctx context.Context, args []string, env envconfig.Lookuper, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-version" || args[0] == "--version") {
		fmt.Fprintln(stdout, version.Line("standin"))
		return 0
	}
	mode := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "call") {
		mode, args = args[0], args[1:]
	}
	var err error
	if mode == "call" {
		err = call(ctx, args, env, stdout, stderr)
	} else {
		err = serve(ctx, args, env, stderr)
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "standin:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "standin:", err)
		return 1
	}
}

// usageError is a bad command line or configuration (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usage(fs *flag.FlagSet, out io.Writer, cfg any, synopsis string) {
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprintln(out, "\nEnvironment:")
		config.Usage(out, cfg)
	}
}

func logger(level string, w io.Writer) (*slog.Logger, error) {
	l, err := config.ParseLevel(level)
	if err != nil {
		return nil, usageError{err}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func loadBus(ctx context.Context, cfg any, env envconfig.Lookuper) error {
	if err := config.Load(ctx, cfg, env); err != nil {
		return usageError{err}
	}
	return nil
}

// connect is bus.Connect without the warning of a deliberate Close.
func connect(cfg BusConfig, name string, log *slog.Logger) (*nats.Conn, error) {
	log = log.With("component", "nats")
	opts := []nats.Option{nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
		if err != nil {
			log.Warn("nats disconnected", "err", err)
		}
	})}
	if cfg.NATSInOrder {
		opts = append(opts, nats.DontRandomize())
	}
	nc, err := bus.Connect(cfg.NATSURL, name, log, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return nc, nil
}

// serve answers requests until ctx ends.
func serve(ctx context.Context, args []string, env envconfig.Lookuper, stderr io.Writer) error {
	var cfg ServeConfig
	fs := flag.NewFlagSet("standin serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usage(fs, stderr, &cfg, "standin [serve]")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("serve takes no arguments, got %q", fs.Args())}
	}
	if err := loadBus(ctx, &cfg, env); err != nil {
		return err
	}
	domain, err := contract.NormalizeDomain(cfg.Domain)
	if err != nil {
		return usageError{fmt.Errorf("FED_DOMAIN %q: %w", cfg.Domain, err)}
	}
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return usageError{fmt.Errorf("FED_SUBJECT_PREFIX: %w", err)}
	}
	log, err := logger(cfg.LogLevel, stderr)
	if err != nil {
		return err
	}
	nc, err := connect(cfg.BusConfig, "standin "+cfg.Component+" "+domain, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer nc.Close()
	brig := NewBrig(domain)
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	srv, err := bus.Serve(work, nc, subjects, cfg.Component, brig.Handle, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("serve: flush subscription: %w", err)
	}
	log.Info("standin serving", "component", cfg.Component, "domain", domain)
	<-ctx.Done()
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, err)
	}
	cancelWork()
	if err := nc.Drain(); err != nil {
		errs = append(errs, fmt.Errorf("drain nats: %w", err))
	}
	log.Info("standin stopped", "served", brig.Served())
	return errors.Join(errs...)
}

// printBody writes a response to stdout: the body (a JSON body with a new
// line after it), or with digest its SHA-256, size and media type.
func printBody(b *bus.Body, stdout io.Writer, digest bool) error {
	defer b.Close()
	if digest {
		h := asset.NewHasher()
		if _, err := io.Copy(h, b); err != nil {
			return fmt.Errorf("read the response: %w", err)
		}
		sum := h.Sum()
		_, err := fmt.Fprintf(stdout, "sha256 %x  %d bytes  %s\n", sum[:], h.Size(), b.ContentType)
		return err
	}
	if _, err := io.Copy(stdout, b); err != nil {
		return fmt.Errorf("read the response: %w", err)
	}
	if b.Object.IsZero() {
		_, err := fmt.Fprintln(stdout)
		return err
	}
	return nil
}

// call sends one request and prints the response.
func call(ctx context.Context, args []string, env envconfig.Lookuper, stdout, stderr io.Writer) error {
	var cfg BusConfig
	fs := flag.NewFlagSet("standin call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply of one attempt")
	retryFor := fs.Duration("retry-for", 0, "retry failed attempts for this long")
	digest := fs.Bool("sha256", false, "print the SHA-256, size and media type of the response instead of the response")
	usage(fs, stderr, &cfg, "standin call [flags] <target-domain> <component> <rpc> <json-body>")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 4 {
		return usageError{fmt.Errorf("call wants <target-domain> <component> <rpc> <json-body>, got %d arguments", fs.NArg())}
	}
	target, component, rpc, body := fs.Arg(0), fs.Arg(1), fs.Arg(2), []byte(fs.Arg(3))
	if err := loadBus(ctx, &cfg, env); err != nil {
		return err
	}
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return usageError{fmt.Errorf("FED_SUBJECT_PREFIX: %w", err)}
	}
	log, err := logger(cfg.LogLevel, stderr)
	if err != nil {
		return err
	}
	nc, err := connect(cfg, "standin call", log)
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	defer nc.Close()
	client := bus.NewClient(nc, subjects, "/standin")
	giveUp := time.Now().Add(*retryFor)
	for {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		resp, err := client.CallStream(cctx, target, component, rpc, body)
		if err == nil {
			err = printBody(resp, stdout, *digest)
			cancel()
			return err
		}
		cancel()
		if ctx.Err() != nil || time.Now().Add(retryInterval).After(giveUp) {
			var fe *contract.Error
			if errors.As(err, &fe) {
				return fmt.Errorf("call failed: %s", fe.JSON())
			}
			return fmt.Errorf("call failed: %w", err)
		}
		log.Debug("attempt failed, retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(retryInterval):
		}
	}
}
