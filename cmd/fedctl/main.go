// Command fedctl manages fedbus's dynamic federation config: the remote
// domains this backend federates with and the RPCs they may call, kept in
// a NATS JetStream key-value bucket that every federator and ingress
// watches. Run fedctl -h for the commands and environment.
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
	"github.com/fedbus/fedbus/ctl"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var cfg ctl.Config
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, ctl.Usage)
		config.Usage(os.Stderr, &cfg)
		return 0
	}
	if err := config.Load(ctx, &cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "fedctl:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "fedctl: invalid configuration:", err)
		return 2
	}
	if err := ctl.Run(ctx, cfg, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fedctl:", err)
		if errors.Is(err, ctl.ErrUsage) {
			fmt.Fprint(os.Stderr, "\n"+ctl.Usage)
			return 2
		}
		return 1
	}
	return 0
}
