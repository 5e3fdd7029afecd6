package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/fedbus/fedbus/internal/version"
)

// ErrHelp is returned by FromEnv when -h was asked for.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by FromEnv when -version was asked for.
var ErrVersion = errors.New("version requested")

// Validator is a binary's configuration: Validate reports every problem
// and changes nothing; Normalize makes the valid values canonical.
// Config structs that embed Common have both.
type Validator interface {
	Validate() error
	Normalize()
}

// Command is how a fedbus binary was started.
type Command struct {
	// Prog names the binary in messages.
	Prog string
	// Args are the command-line arguments (only -h and -version).
	Args []string
	// Out receives -h and -version (os.Stdout: help is no error).
	Out io.Writer
	// Environ is the environment as "NAME=value" entries (nil:
	// os.Environ()); only its FED_* names are checked (CheckEnviron).
	Environ []string
	// Known are the variables of the other fedbus binaries: set in a
	// shared environment they are not mistakes.
	Known []string
}

// FromEnv handles the command line of a fedbus binary (-h, -version) and
// fills cfg, which holds its defaults, from the process environment. With
// -h it writes the variables to cmd.Out and returns ErrHelp; with -version
// the version, and ErrVersion. An invalid configuration returns an error
// that lists every problem, one line each, naming its variable (binaries
// exit with status 2): values that cannot be parsed, values Validate
// refuses, and FED_* variables that are typos of known ones. A valid
// configuration is normalised; warnings are what is suspicious but may be
// intended (unknown FED_* variables), for the log.
func FromEnv(ctx context.Context, cmd Command, cfg Validator) (warnings []string, err error) {
	fs := flag.NewFlagSet(cmd.Prog, flag.ContinueOnError)
	fs.SetOutput(cmd.Out)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(cmd.Out, "Usage: %s [-version]\n\n%s is configured only through the environment:\n\n", cmd.Prog, cmd.Prog)
		Usage(cmd.Out, cfg)
	}
	if err := fs.Parse(cmd.Args); err != nil {
		return nil, err
	}
	if *showVersion {
		fmt.Fprintln(cmd.Out, version.Line(cmd.Prog))
		return nil, ErrVersion
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s takes no arguments (configuration is read from the environment; -h lists it)", cmd.Prog)
	}
	var errs []error
	if err := Load(ctx, cfg, nil); err != nil {
		errs = append(errs, err)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	environ := cmd.Environ
	if environ == nil {
		environ = os.Environ()
	}
	typos, warnings := CheckEnviron(environ, slices.Concat(Variables(cfg), cmd.Known))
	errs = append(errs, typos...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
	}
	cfg.Normalize()
	return warnings, nil
}
