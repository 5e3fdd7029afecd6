package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// ErrHelp is returned by FromEnv when -h was asked for.
var ErrHelp = flag.ErrHelp

// Validator is a binary's configuration: Validate reports every problem
// and changes nothing; Normalize makes the valid values canonical.
// Config structs that embed Common have both.
type Validator interface {
	Validate() error
	Normalize()
}

// FromEnv handles the command line of a fedbus binary (only -h) and fills
// cfg, which holds its defaults, from the environment. With -h it writes
// the variables to out and returns ErrHelp; an invalid configuration
// returns an error that lists every problem, each naming its variable
// (binaries exit with status 2). A valid configuration is normalised.
func FromEnv(ctx context.Context, prog string, args []string, cfg Validator, out io.Writer) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s\n\n%s is configured only through the environment:\n\n", prog, prog)
		Usage(out, cfg)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments (configuration is read from the environment; -h lists it)", prog)
	}
	var errs []error
	if err := Load(ctx, cfg, nil); err != nil {
		errs = append(errs, err)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
	}
	cfg.Normalize()
	return nil
}
