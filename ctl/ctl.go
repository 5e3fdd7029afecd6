// Package ctl implements fedctl, the command-line tool that manages the
// dynamic federation config in the JetStream key-value bucket: remote
// domains and the RPCs they may call. It creates the bucket only when
// asked (fedctl create), refuses rules that name components the services
// do not federate, and warns when no running federator or ingress watches
// the bucket it writes (the services answer NATS service discovery with
// their bucket and components).
// It also shows and manages the notifications waiting for their
// destinations and the dead letters (fedctl notifications).
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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/redact"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/policy"
)

// Errors of Run.
var (
	// ErrUsage is returned for a command line that fedctl does not
	// understand.
	ErrUsage = errors.New("usage")
	// ErrNoBucket is returned when the bucket does not exist (fedctl
	// create makes it).
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrUnknownComponent is returned for a rule that names a component
	// the services do not federate.
	ErrUnknownComponent = errors.New("component not federated")
)

// probeTimeout bounds the check that NATS lets fedctl read its replies;
// replicateTimeout bounds moving the bucket to FED_JETSTREAM_REPLICAS.
const (
	probeTimeout     = 5 * time.Second
	replicateTimeout = 30 * time.Second
)

// Config is fedctl's configuration (environment). Start from NewConfig.
type Config struct {
	NATSURL    string   `env:"FED_NATS_URL" secret:"userinfo" desc:"NATS server(s), comma-separated"`
	Bucket     string   `env:"FED_KV_BUCKET" desc:"key-value bucket of the federation config: the services' FED_KV_BUCKET"`
	Components []string `env:"FED_COMPONENTS" desc:"components a rule may name when no running service says which it federates: the services' FED_COMPONENTS"`
	// Replicas of the bucket: create makes it with them, or moves an
	// existing bucket to them.
	Replicas int `env:"FED_JETSTREAM_REPLICAS" desc:"replicas of the bucket: 3 on a NATS cluster (create moves an existing bucket to this count)"`
	// SubjectPrefix, NotifyStream and DeadStream are the federators'
	// (fedctl notifications).
	SubjectPrefix string `env:"FED_SUBJECT_PREFIX" desc:"first subject token: the services' FED_SUBJECT_PREFIX"`
	NotifyStream  string `env:"FED_NOTIFY_STREAM" desc:"stream of outbound notifications: the federators' FED_NOTIFY_STREAM"`
	DeadStream    string `env:"FED_NOTIFY_DEAD_STREAM" desc:"stream of dead letters: the federators' FED_NOTIFY_DEAD_STREAM"`
	NATS          config.NATSAuth
	// Diag is what the diagnostic commands read of this backend's set-up.
	Diag Diag
}

// NewConfig returns fedctl's configuration with the defaults of the
// services (the same bucket, NATS URL and components).
func NewConfig() Config {
	d := config.DefaultCommon()
	return Config{NATSURL: d.NATSURL, Bucket: config.DefaultBucket, Components: d.Components, Replicas: d.JetStreamReplicas, Diag: newDiag(),
		SubjectPrefix: d.SubjectPrefix, NotifyStream: contract.DefaultNotifyStream, DeadStream: contract.DefaultDeadStream}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("FED_NATS_URL is empty"))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("FED_KV_BUCKET is empty: name the services' bucket (default "+config.DefaultBucket+")"))
	}
	for _, comp := range c.Components {
		if !contract.ValidComponent(comp) {
			errs = append(errs, fmt.Errorf("FED_COMPONENTS entry %q is not [a-z0-9-]{1,63}", comp))
		}
	}
	if err := config.ValidReplicas(c.Replicas); err != nil {
		errs = append(errs, err)
	}
	if _, err := contract.NewSubjects(c.SubjectPrefix); err != nil {
		errs = append(errs, fmt.Errorf("FED_SUBJECT_PREFIX: %w", err))
	}
	if !notify.ValidName(c.NotifyStream) || !notify.ValidName(c.DeadStream) {
		errs = append(errs, errors.New("FED_NOTIFY_STREAM and FED_NOTIFY_DEAD_STREAM must be [A-Za-z0-9_-]{1,128}"))
	}
	return errors.Join(errs...)
}

// Normalize changes nothing (config.Validator).
func (c *Config) Normalize() {}

// Usage is fedctl's help text.
const Usage = `Usage:
  fedctl create                                            create the bucket (FED_KV_BUCKET) with FED_JETSTREAM_REPLICAS replicas, or move it to them
  fedctl remotes list
  fedctl remotes add <domain> [-allow component:rpc]...   (rpc "*" = every rpc)
  fedctl remotes remove <domain>
  fedctl rules show
  fedctl rules set component:rpc...                        default rules for every remote
  fedctl rules clear                                       default: every rpc of FED_COMPONENTS
  fedctl remotes status [--json]                            per remote: up/down, last success, last failure, in flight
  fedctl discover <domain> [--json]                         SRV targets in fedbus's order, addresses, the certificate each serves
  fedctl call <domain> <component> <rpc> [json] [--json]   one federated call: status, latency, trace id
  fedctl check [--json]                                     this backend's set-up: SRV record, certificates, NATS, services, components, allow list
` + NotificationsUsage + `  fedctl -version

Writing commands warn when no running federator or ingress watches the
bucket; rules may name only the components the services federate.

Diagnostics exit 1 when a check fails; each failure says what to fix.

Environment:
`

// command is one fedctl command.
type command struct {
	write bool // changes the bucket: check the rules, say who sees it
	run   func(ctx context.Context, st *policy.Store, args []string, known []string, out io.Writer) error
}

var commands = map[string]command{
	"remotes list":   {run: list},
	"remotes add":    {write: true, run: add},
	"remotes remove": {write: true, run: remove},
	"rules show":     {run: show},
	"rules set":      {write: true, run: setRules},
	"rules clear":    {write: true, run: clearRules},
}

// Run executes one fedctl command: its result goes to out, warnings to
// warn.
func Run(ctx context.Context, cfg Config, args []string, out, warn io.Writer) error {
	asJSON := slices.Contains(args, "--json") || slices.Contains(args, "-json")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--json" || a == "-json" })
	if done, err := diagnose(ctx, cfg, args, out, asJSON); done {
		return err
	}
	name := strings.Join(args[:min(len(args), 2)], " ")
	cmd, ok := commands[name]
	switch {
	case len(args) > 0 && args[0] == "notifications":
	case len(args) == 1 && args[0] == "create":
	case len(args) < 2 && len(args) > 0 && (args[0] == "remotes" || args[0] == "rules"):
		return fmt.Errorf("%w: %s needs a subcommand", ErrUsage, args[0])
	case len(args) == 0:
		return fmt.Errorf("%w: a command is needed", ErrUsage)
	case !ok:
		return fmt.Errorf("%w: unknown command %q", ErrUsage, strings.Join(args, " "))
	}
	nc, err := connect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if args[0] == "notifications" {
		return notifications(ctx, cfg, js, args[1:], out)
	}
	if args[0] == "create" {
		return create(ctx, nc, js, cfg, out, warn)
	}
	st, err := policy.OpenStore(ctx, js, cfg.Bucket, 0)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("%w: bucket %s (FED_KV_BUCKET) does not exist: create it with 'fedctl create' (and check FED_KV_BUCKET against the services')", ErrNoBucket, cfg.Bucket)
	}
	if err != nil {
		return err
	}
	if !cmd.write {
		return cmd.run(ctx, st, args[2:], nil, out)
	}
	services, askErr := askServices(nc)
	watchers := watching(services, cfg.Bucket)
	if err := cmd.run(ctx, st, args[2:], federated(cfg, watchers), out); err != nil {
		return err
	}
	report(cfg.Bucket, services, watchers, askErr, out, warn)
	return nil
}

// connect connects to NATS and checks that fedctl may read its replies
// (else every command would wait for its deadline).
func connect(cfg Config) (*nats.Conn, error) {
	nopts, err := cfg.NATS.Options()
	if err != nil {
		return nil, err
	}
	nopts = append(nopts, nats.Name("fedctl"), nats.PermissionErrOnSubscribe(true))
	nc, err := nats.Connect(cfg.NATSURL, nopts...)
	if err != nil {
		return nil, redact.URLError("connect to NATS (FED_NATS_URL)", cfg.NATSURL, err)
	}
	if err := bus.ProbeInbox(nc, probeTimeout); err != nil {
		nc.Close()
		if errors.Is(err, nats.ErrPermissionViolation) {
			return nil, fmt.Errorf("the NATS server refuses fedctl its replies: set FED_NATS_INBOX_PREFIX to the inbox prefix its NATS user may subscribe to (_INBOX_fedctl with deploy/nats/fedbus.conf): %w", err)
		}
		return nil, err
	}
	return nc, nil
}

// create makes the bucket with FED_JETSTREAM_REPLICAS replicas, or says
// it exists and moves it to that count (a backend whose single NATS
// server became a cluster).
func create(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, out, warn io.Writer) error {
	replicas := max(cfg.Replicas, 1)
	if _, err := js.KeyValue(ctx, cfg.Bucket); err == nil {
		st, err := policy.OpenStore(ctx, js, cfg.Bucket, 0)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, replicateTimeout)
		had, err := st.Replicate(rctx, replicas)
		cancel()
		if err != nil {
			return err
		}
		if had != replicas {
			fmt.Fprintf(out, "bucket %s exists already: %d replica(s) → %d (FED_JETSTREAM_REPLICAS)\n", cfg.Bucket, had, replicas)
		} else {
			fmt.Fprintf(out, "bucket %s exists already\n", cfg.Bucket)
		}
	} else {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
		}
		if _, err := policy.OpenStore(ctx, js, cfg.Bucket, replicas); err != nil {
			return err
		}
		fmt.Fprintf(out, "created bucket %s (%d replica(s))\n", cfg.Bucket, replicas)
	}
	services, askErr := askServices(nc)
	report(cfg.Bucket, services, watching(services, cfg.Bucket), askErr, out, warn)
	return nil
}

// federated returns the components rules may name: those the services
// that watch the bucket federate, else FED_COMPONENTS.
func federated(cfg Config, watchers []Service) []string {
	var comps []string
	for _, s := range watchers {
		comps = append(comps, s.Components...)
	}
	if len(comps) == 0 {
		return cfg.Components
	}
	slices.Sort(comps)
	return slices.Compact(comps)
}

// report says which running services see the bucket, and warns when none
// does.
func report(bucket string, services, watchers []Service, askErr error, out, warn io.Writer) {
	switch {
	case askErr != nil:
		fmt.Fprintf(warn, "fedctl: warning: could not ask which services watch bucket %s (allow fedctl to publish $SRV.INFO.%s): %v\n", bucket, contract.ServiceName, askErr)
	case len(watchers) > 0:
		fmt.Fprintf(out, "watched by %d running service(s): %s\n", len(watchers), describe(watchers))
	case len(services) == 0:
		fmt.Fprintf(warn, "fedctl: warning: no running federator or ingress answers on this NATS server: the change applies when services with FED_KV_BUCKET=%s start\n", bucket)
	default:
		fmt.Fprintf(warn, "fedctl: warning: no running federator or ingress watches bucket %s, so this changes nothing now (running: %s): start them with FED_KV_BUCKET=%s, or set FED_KV_BUCKET for fedctl to theirs\n",
			bucket, describe(services), bucket)
	}
}

func describe(services []Service) string {
	parts := make([]string, len(services))
	for i, s := range services {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

func list(ctx context.Context, st *policy.Store, _ []string, _ []string, out io.Writer) error {
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

func show(ctx context.Context, st *policy.Store, _ []string, _ []string, out io.Writer) error {
	_, defaults, err := st.List(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "default rules: %s\n", formatRules(defaults))
	return nil
}

func add(ctx context.Context, st *policy.Store, args []string, known []string, out io.Writer) error {
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
	rules, err := parseRules(allows, known)
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

func remove(ctx context.Context, st *policy.Store, args []string, _ []string, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: remotes remove takes one domain", ErrUsage)
	}
	d, err := st.Remove(ctx, args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s\n", d)
	return nil
}

func setRules(ctx context.Context, st *policy.Store, args []string, known []string, out io.Writer) error {
	rules, err := parseRules(args, known)
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
}

func clearRules(ctx context.Context, st *policy.Store, _ []string, _ []string, out io.Writer) error {
	if err := st.SetDefaults(ctx, nil); err != nil {
		return err
	}
	fmt.Fprintf(out, "default rules: %s\n", formatRules(nil))
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseRules parses component:rpc pairs (nil for none). A component
// outside known is refused: a rule for it allows nothing, and the remotes
// it applies to could call nothing else.
func parseRules(pairs []string, known []string) (policy.Rules, error) {
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
	for comp := range rules {
		if !slices.Contains(known, comp) {
			return nil, fmt.Errorf("%w: %q is not one of the federated components (%s): a rule naming it would allow nothing, and the remotes it applies to could call nothing else",
				ErrUnknownComponent, comp, strings.Join(known, ","))
		}
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

// diagnose runs the diagnostic commands; done is false for the others.
func diagnose(ctx context.Context, cfg Config, args []string, out io.Writer, asJSON bool) (done bool, err error) {
	if len(args) == 0 {
		return false, nil
	}
	switch {
	case args[0] == "discover":
		if len(args) != 2 {
			return true, fmt.Errorf("%w: discover takes one domain", ErrUsage)
		}
		return true, discover(ctx, cfg.Diag, args[1], out, asJSON)
	case args[0] == "call":
		return true, call(ctx, cfg, args[1:], out, asJSON)
	case args[0] == "check":
		if len(args) != 1 {
			return true, fmt.Errorf("%w: check takes no argument", ErrUsage)
		}
		return true, check(ctx, cfg, out, asJSON)
	case len(args) == 2 && args[0] == "remotes" && args[1] == "status":
		return true, remotesStatus(ctx, cfg, out, asJSON)
	}
	return false, nil
}
