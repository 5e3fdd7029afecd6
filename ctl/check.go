package ctl

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/tlsconf"
	"github.com/fedbus/fedbus/tracing"
)

// gatherWait is how long fedctl collects the answers of the running
// services to a discovery request ($SRV.PING, $SRV.STATS).
const gatherWait = 500 * time.Millisecond

// CheckRPC is the RPC fedctl check sends to each local component to see
// whether anything serves it (any answer, an error included, is fine).
const CheckRPC = "fedbus-check"

// check is fedctl check: this backend's own set-up.
func check(ctx context.Context, cfg Config, out io.Writer, asJSON bool) error {
	d := cfg.Diag
	var r findings
	domain, err := contract.NormalizeDomain(d.Domain)
	if err != nil {
		r.add("domain", StateFail, fmt.Sprintf("FED_DOMAIN %q: %v", d.Domain, err), "set FED_DOMAIN to this backend's domain, e.g. a.example.com")
		return finish(&r, out, asJSON, nil)
	}
	leaf := checkCertificates(&r, d)
	checkSRV(ctx, &r, d, domain, leaf)
	nc, err := connect(cfg)
	if err != nil {
		r.add("nats", StateFail, err.Error(), "start NATS or fix FED_NATS_URL and the FED_NATS_* credentials")
		checkAllowList(ctx, &r, d, nil, cfg.Bucket)
		return finish(&r, out, asJSON, map[string]any{"domain": domain})
	}
	defer nc.Close()
	r.add("nats", StateOK, "connected to "+nc.ConnectedUrlRedacted(), "")
	pings, err := gather(ctx, nc, micro.PingVerb, contract.ServiceName)
	roles := map[string]int{}
	for _, raw := range pings {
		var p micro.Ping
		if json.Unmarshal(raw, &p) == nil && p.Metadata[contract.MetaDomain] == domain {
			roles[p.Metadata[contract.MetaRole]]++
		}
	}
	for _, role := range []string{"federator", "ingress"} {
		switch {
		case err != nil:
			r.add(role, StateFail, err.Error(), "allow this NATS user to publish $SRV.> and to receive on its inbox")
		case roles[role] == 0:
			r.add(role, StateFail, fmt.Sprintf("no %s of %s answers NATS service discovery ($SRV.PING.%s)", role, domain, contract.ServiceName),
				"start the "+role+" (cmd/"+role+") with this FED_NATS_URL and FED_DOMAIN")
		default:
			r.add(role, StateOK, fmt.Sprintf("%d instance(s) running", roles[role]), "")
		}
	}
	checkComponents(ctx, &r, nc, d, cfg.Components, domain)
	checkAllowList(ctx, &r, d, nc, cfg.Bucket)
	return finish(&r, out, asJSON, map[string]any{"domain": domain})
}

// checkCertificates checks FED_TLS_CERT, FED_TLS_KEY and FED_TLS_CA and
// returns the leaf certificate (nil when it cannot be used).
func checkCertificates(r *findings, d Diag) *x509.Certificate {
	var leaf *x509.Certificate
	store, err := tlsconf.Load(tlsconf.Files{Cert: d.TLSCert, Key: d.TLSKey, CA: d.TLSCA}, "1.2")
	if err != nil {
		r.add("certificate", StateFail, err.Error(), "set FED_TLS_CERT, FED_TLS_KEY and FED_TLS_CA to this backend's PEM files (a certificate with serverAuth and clientAuth)")
	} else {
		leaf = store.Leaf()
		judgeExpiry(r, d, "certificate", "certificate "+strings.Join(leaf.DNSNames, ","), leaf, "renew FED_TLS_CERT (fedbus reloads it without restart)")
	}
	_, cas, err := d.caPool()
	if err != nil {
		r.add("ca", StateFail, err.Error(), "set FED_TLS_CA to the PEM bundle of the CAs of the remote backends")
		return leaf
	}
	for _, ca := range cas {
		judgeExpiry(r, d, "ca", "CA "+ca.Subject.String(), ca, "replace the CA in FED_TLS_CA (and the certificates it issued)")
	}
	if leaf != nil {
		pool, _, _ := d.caPool()
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			r.add("ca", StateWarn, "this backend's certificate does not chain to FED_TLS_CA: "+err.Error(),
				"remote backends must trust the CA of FED_TLS_CERT; usually FED_TLS_CA holds the federation's CA, which issued it")
		}
	}
	return leaf
}

// judgeExpiry adds the finding of one certificate's validity.
func judgeExpiry(r *findings, d Diag, check, what string, c *x509.Certificate, fix string) {
	left := time.Until(c.NotAfter)
	until := c.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case time.Now().Before(c.NotBefore):
		r.add(check, StateFail, fmt.Sprintf("%s is not valid before %s", what, c.NotBefore.UTC().Format(time.RFC3339)), "use a certificate valid now (or fix this machine's clock)")
	case left <= 0:
		r.add(check, StateFail, what+" expired at "+until, fix)
	case left < d.ExpiryFail:
		r.add(check, StateFail, fmt.Sprintf("%s expires at %s, in %s", what, until, inDays(left)), fix)
	case left < d.ExpiryWarn:
		r.add(check, StateWarn, fmt.Sprintf("%s expires at %s, in %s", what, until, inDays(left)), fix)
	default:
		r.add(check, StateOK, fmt.Sprintf("%s valid until %s (%s)", what, until, inDays(left)), "")
	}
}

// inDays formats a time left: days from two days on, else hours.
func inDays(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return fmt.Sprintf("%d hours", int(d.Hours()))
}

// checkSRV checks that this backend's SRV record exists and points at a
// name of its certificate (else the remotes' ingresses refuse it:
// authentication-failure).
func checkSRV(ctx context.Context, r *findings, d Diag, domain string, leaf *x509.Certificate) {
	res, err := d.resolver()
	if err != nil {
		r.add("srv", StateFail, err.Error(), "set FED_DNS_SERVER to host:port of a resolver")
		return
	}
	defer res.Close()
	name := "_wire-server-federator._tcp." + domain
	ts, err := res.SRV(ctx, domain)
	if err != nil {
		r.add("srv", StateFail, fmt.Sprintf("%s: %v", name, err), srvFix(err, domain))
		return
	}
	if leaf == nil {
		r.add("srv", StateWarn, fmt.Sprintf("%s has %d target(s); not compared with the certificate (not loaded)", name, len(ts)), "")
		return
	}
	var fits, misfits []string
	for _, t := range ts {
		target := fmt.Sprintf("%s:%d", t.Host, t.Port)
		if leaf.VerifyHostname(t.Host) == nil {
			fits = append(fits, target)
		} else {
			misfits = append(misfits, target)
		}
	}
	sans := strings.Join(leaf.DNSNames, ",")
	switch {
	case len(fits) == 0:
		r.add("srv", StateFail, fmt.Sprintf("%s points at %s, which is not a name of this backend's certificate (DNS names: %s): remote ingresses will refuse this backend (authentication-failure)",
			name, strings.Join(misfits, ", "), sans),
			fmt.Sprintf("point the SRV record at a name of the certificate (%s), or issue a certificate for %s", sans, ts[0].Host))
	case len(misfits) > 0:
		r.add("srv", StateWarn, fmt.Sprintf("%s: %s fit the certificate, %s do not (DNS names: %s)", name, strings.Join(fits, ", "), strings.Join(misfits, ", "), sans),
			"remove the targets that are not this backend's, or add their names to the certificate")
	default:
		r.add("srv", StateOK, fmt.Sprintf("%s points at %s, in the certificate", name, strings.Join(fits, ", ")), "")
	}
}

// checkComponents asks each component of FED_COMPONENTS whether anything
// serves it: a request for CheckRPC on fed.in.<component>.<rpc>.<domain>;
// no responder means nothing does.
func checkComponents(ctx context.Context, r *findings, nc *nats.Conn, d Diag, components []string, domain string) {
	subjects, err := contract.NewSubjects(d.SubjectPrefix)
	if err != nil {
		r.add("components", StateFail, err.Error(), "fix FED_SUBJECT_PREFIX")
		return
	}
	for _, comp := range components {
		subject, err := subjects.In(comp, CheckRPC, domain)
		if err != nil {
			r.add("component", StateFail, err.Error(), "fix FED_COMPONENTS")
			continue
		}
		ev := bus.Event{ID: bus.NewID(), Source: "/fedctl", Type: contract.TypeRequest, OriginDomain: domain, TimeoutMs: 2000, Data: []byte("null")}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = nc.RequestMsgWithContext(cctx, ev.Message(subject))
		cancel()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			r.add("component", StateFail, comp+": nothing serves "+subject,
				"start "+comp+" (subscribed to "+strings.TrimSuffix(subject, CheckRPC+"."+domain)+"> in queue group "+comp+"), or remove it from FED_COMPONENTS")
		case err != nil:
			r.add("component", StateWarn, comp+": no answer in 2s: "+err.Error(), "check that "+comp+" is not overloaded")
		default:
			r.add("component", StateOK, comp+" answers", "")
		}
	}
}

// checkAllowList checks that the strategy allows somebody: allow-list
// needs FED_ALLOW_LIST or remotes in the bucket.
func checkAllowList(ctx context.Context, r *findings, d Diag, nc *nats.Conn, bucket string) {
	switch d.Strategy {
	case contract.AllowNone:
		r.add("strategy", StateWarn, "FED_STRATEGY is allow-none: federation is off", "set FED_STRATEGY to allow-list (with FED_ALLOW_LIST) or allow-all")
		return
	case contract.AllowAll:
		r.add("strategy", StateOK, "allow-all: every domain may federate", "")
		return
	case contract.AllowList:
	default:
		r.add("strategy", StateFail, fmt.Sprintf("FED_STRATEGY %q is not allow-none, allow-all or allow-list", d.Strategy), "set FED_STRATEGY")
		return
	}
	static := 0
	for _, a := range d.AllowList {
		if strings.TrimSpace(a) != "" {
			static++
		}
	}
	dynamic := 0
	if nc != nil && bucket != "" {
		if js, err := jetstream.New(nc); err == nil {
			if st, err := policy.OpenStore(ctx, js, bucket, 0); err == nil {
				if entries, _, err := st.List(ctx); err == nil {
					dynamic = len(entries)
				}
			}
		}
	}
	if static+dynamic == 0 {
		r.add("allow list", StateFail, "FED_STRATEGY is allow-list but FED_ALLOW_LIST is empty and bucket "+bucket+" has no remotes: every remote is refused",
			"add domains to FED_ALLOW_LIST, or with fedctl remotes add <domain>")
		return
	}
	r.add("allow list", StateOK, fmt.Sprintf("%d domain(s) in FED_ALLOW_LIST, %d remote(s) in bucket %s", static, dynamic, bucket), "")
}

// gather sends a discovery request (verb) for the service name and returns
// the answers that arrive within gatherWait.
func gather(ctx context.Context, nc *nats.Conn, verb micro.Verb, name string) ([][]byte, error) {
	subject, err := micro.ControlSubject(verb, name, "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	var out [][]byte
	deadline := time.Now().Add(gatherWait)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return out, nil
		}
		msg, err := sub.NextMsg(wait)
		if errors.Is(err, nats.ErrTimeout) || ctx.Err() != nil {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if len(msg.Data) > 0 {
			out = append(out, msg.Data)
		}
	}
}

// call is fedctl call <domain> <component> <rpc> [json].
func call(ctx context.Context, cfg Config, args []string, out io.Writer, asJSON bool) error {
	if len(args) < 3 || len(args) > 4 {
		return fmt.Errorf("%w: call takes <domain> <component> <rpc> [json body]", ErrUsage)
	}
	body := []byte("null")
	if len(args) == 4 {
		body = []byte(args[3])
		if !json.Valid(body) {
			return fmt.Errorf("%w: the body %q is not JSON", ErrUsage, args[3])
		}
	}
	subjects, err := contract.NewSubjects(cfg.Diag.SubjectPrefix)
	if err != nil {
		return err
	}
	nc, err := connect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Diag.RequestTimeout)
	defer cancel()
	tp := newTraceParent()
	id := bus.NewID()
	start := time.Now()
	reply, err := bus.NewClient(nc, subjects, "/fedctl").Call(ctx, args[0], args[1], args[2], body, bus.WithID(id), bus.WithTraceParent(tp))
	res := CallResult{Domain: args[0], Component: args[1], RPC: args[2], RequestID: id, TraceID: tracing.TraceID(tp),
		LatencyMs: float64(time.Since(start).Microseconds()) / 1000, Status: StateOK}
	if err != nil {
		e := contract.AsError(err)
		res.Status, res.Error = StateFail, e
	} else {
		res.Body = json.RawMessage(reply)
		if !json.Valid(reply) {
			res.Body, _ = json.Marshal(string(reply))
		}
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		if res.Error != nil {
			fmt.Fprintf(out, "status:   %d %s: %s\n", res.Error.Code, res.Error.Label, res.Error.Message)
			if res.Error.Inner != nil {
				fmt.Fprintf(out, "remote:   %d %s: %s\n", res.Error.Inner.Code, res.Error.Inner.Label, res.Error.Inner.Message)
			}
		} else {
			fmt.Fprintf(out, "status:   ok\n")
		}
		fmt.Fprintf(out, "latency:  %.1f ms\ntrace id: %s\nrequest:  %s\n", res.LatencyMs, res.TraceID, res.RequestID)
		if res.Body != nil {
			fmt.Fprintf(out, "body:     %s\n", res.Body)
		}
	}
	if res.Error != nil {
		return ErrFailed
	}
	return nil
}

// CallResult is the outcome of fedctl call.
type CallResult struct {
	Domain    string          `json:"domain"`
	Component string          `json:"component"`
	RPC       string          `json:"rpc"`
	Status    string          `json:"status"`
	LatencyMs float64         `json:"latency_ms"`
	TraceID   string          `json:"trace_id"`
	RequestID string          `json:"request_id"`
	Body      json.RawMessage `json:"body,omitempty"`
	Error     *contract.Error `json:"error,omitempty"`
}
