// Package ctl implements fedctl, the command-line tool that manages the
// dynamic federation config in the JetStream key-value bucket: remote
// domains and the RPCs they may call.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/internal/redact"
	"github.com/fedbus/fedbus/policy"
)

// ErrUsage is returned for a command line that fedctl does not understand.
var ErrUsage = errors.New("usage")

// Config is fedctl's configuration (environment).
type Config struct {
	NATSURL string `env:"FED_NATS_URL, default=nats://127.0.0.1:4222" desc:"NATS server(s), comma-separated"`
	Bucket  string `env:"FED_KV_BUCKET, default=fedbus" desc:"key-value bucket of the federation config"`
	NATS    config.NATSAuth
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("FED_NATS_URL is empty"))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("FED_KV_BUCKET is empty"))
	}
	return errors.Join(errs...)
}

// Usage is fedctl's help text.
const Usage = `Usage:
  fedctl remotes list
  fedctl remotes add <domain> [-allow component:rpc]...   (rpc "*" = every rpc)
  fedctl remotes remove <domain>
  fedctl rules show
  fedctl rules set component:rpc...                        default rules for every remote
  fedctl rules clear                                       default: every rpc of FED_COMPONENTS

Environment:
`

// Run executes one fedctl command and writes its result to out.
func Run(ctx context.Context, cfg Config, args []string, out io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("%w: a command is needed", ErrUsage)
	}
	nopts, err := cfg.NATS.Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NATSURL, append(nopts, nats.Name("fedctl"))...)
	if err != nil {
		return redact.URLError("connect", cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	create := args[0] != "rules" || args[1] != "show"
	if args[0] == "remotes" && args[1] == "list" {
		create = false
	}
	st, err := policy.OpenStore(ctx, js, cfg.Bucket, create)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		fmt.Fprintf(out, "bucket %s does not exist yet: no dynamic remotes, default rules allow every rpc\n", cfg.Bucket)
		return nil
	}
	if err != nil {
		return err
	}
	switch args[0] + " " + args[1] {
	case "remotes list":
		return list(ctx, st, out)
	case "remotes add":
		return add(ctx, st, args[2:], out)
	case "remotes remove":
		if len(args) != 3 {
			return fmt.Errorf("%w: remotes remove takes one domain", ErrUsage)
		}
		d, err := st.Remove(ctx, args[2])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "removed %s\n", d)
		return nil
	case "rules show":
		_, defaults, err := st.List(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "default rules: %s\n", formatRules(defaults))
		return nil
	case "rules set":
		rules, err := parseRules(args[2:])
		if err != nil {
			return err
		}
		if len(rules) == 0 {
			return fmt.Errorf("%w: rules set needs at least one component:rpc", ErrUsage)
		}
		if err := st.SetDefaults(ctx, rules); err != nil {
			return err
		}
		fmt.Fprintf(out, "default rules: %s\n", formatRules(rules))
		return nil
	case "rules clear":
		if err := st.SetDefaults(ctx, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "default rules: %s\n", formatRules(nil))
		return nil
	default:
		return fmt.Errorf("%w: unknown command %q", ErrUsage, strings.Join(args[:2], " "))
	}
}

func list(ctx context.Context, st *policy.Store, out io.Writer) error {
	entries, defaults, err := st.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tMAY CALL")
	for _, e := range entries {
		rules := "default rules"
		if e.Remote.Rules != nil {
			rules = formatRules(e.Remote.Rules)
		}
		fmt.Fprintf(tw, "%s\t%s\n", e.Domain, rules)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d remote(s); default rules: %s\n", len(entries), formatRules(defaults))
	return nil
}

func add(ctx context.Context, st *policy.Store, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("remotes add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var allows multiFlag
	fs.Var(&allows, "allow", "component:rpc the remote may call (repeatable; rpc * for all)")
	if len(args) == 0 {
		return fmt.Errorf("%w: remotes add takes a domain", ErrUsage)
	}
	domain := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected %q", ErrUsage, fs.Args())
	}
	rules, err := parseRules(allows)
	if err != nil {
		return err
	}
	d, err := st.Add(ctx, domain, policy.Remote{Rules: rules})
	if err != nil {
		return err
	}
	desc := "default rules"
	if rules != nil {
		desc = formatRules(rules)
	}
	fmt.Fprintf(out, "added %s (may call: %s)\n", d, desc)
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseRules parses component:rpc pairs; nil for none.
func parseRules(pairs []string) (policy.Rules, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	rules := policy.Rules{}
	for _, p := range pairs {
		comp, rpc, ok := strings.Cut(p, ":")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not component:rpc", ErrUsage, p)
		}
		if !slices.Contains(rules[comp], rpc) {
			rules[comp] = append(rules[comp], rpc)
		}
	}
	if err := rules.Validate(); err != nil {
		return nil, err
	}
	return rules, nil
}

func formatRules(r policy.Rules) string {
	if r == nil {
		return "every rpc of FED_COMPONENTS"
	}
	var parts []string
	for comp, rpcs := range r {
		for _, rpc := range rpcs {
			parts = append(parts, comp+":"+rpc)
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " ")
}
