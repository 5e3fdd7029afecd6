// Command fedctl manages fedbus's dynamic federation config: the remote
// domains this backend federates with and the RPCs they may call, kept in
// a NATS JetStream key-value bucket that every federator and ingress
// watches. Run fedctl -h for the commands and environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/ctl"
	"github.com/fedbus/fedbus/internal/version"
	"github.com/fedbus/fedbus/tracing"
)

// timeout bounds one fedctl command.
const timeout = 15 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	os.Exit(run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is fedctl: exit 0, 1 when the command failed, 2 for a command line
// or configuration it does not understand.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cfg := ctl.NewConfig()
	usage := func(w io.Writer) {
		fmt.Fprint(w, ctl.Usage)
		config.Usage(w, &cfg)
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.Line("fedctl"))
		return 0
	}
	var errs []error
	if err := config.Load(ctx, &cfg, nil); err != nil {
		errs = append(errs, err)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	// A typo of a variable (FED_KV_BUKCET) would make fedctl write the
	// default bucket; the services' own variables are no mistake here.
	common := config.DefaultCommon()
	typos, _ := config.CheckEnviron(environ, slices.Concat(config.Variables(&cfg), config.Variables(&common)))
	errs = append(errs, typos...)
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "fedctl: invalid configuration:\n%v\n", errors.Join(errs...))
		return 2
	}
	// fedctl call records its span when the OTEL_* variables ask for it.
	stopTracing, _, err := tracing.Setup(ctx, "fedctl")
	if err != nil {
		fmt.Fprintln(stderr, "fedctl:", err)
		return 2
	}
	defer func() { _ = stopTracing(context.Background()) }()
	if err := ctl.Run(ctx, cfg, args, stdout, stderr); err != nil {
		if errors.Is(err, ctl.ErrFailed) {
			return 1 // the output says what failed and what to fix
		}
		fmt.Fprintln(stderr, "fedctl:", err)
		if errors.Is(err, ctl.ErrUsage) {
			fmt.Fprint(stderr, "\n"+ctl.Usage)
			return 2
		}
		return 1
	}
	return 0
}
