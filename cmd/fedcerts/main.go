// Command fedcerts writes throwaway TLS material for local fedbus backends
// (docker-compose, manual tests): a CA and, per backend, a certificate whose
// DNS SAN is the backend's infra host, issued by that CA. Files, in -dir:
//
//	ca.crt                 the CA certificate (FED_TLS_CA of every backend)
//	<domain>.crt, .key     the backend's certificate and key (FED_TLS_CERT, FED_TLS_KEY)
//	<domain>-ca.crt        a copy of ca.crt
//
// The CA's key is not kept: run fedcerts again for new certificates. They
// are valid for 24 hours: development only. Certificates are written
// world-readable (0644), keys readable by their owner only (0600); with
// -readable-keys the keys are world-readable too, for containers that run
// as another user (make certs, docker-compose).
//
// Usage:
//
//	fedcerts [-dir bin/certs] [-readable-keys] [-backend a.example.com=federator.a-infra.example.net ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/version"
	"github.com/fedbus/fedbus/test/testbed"
)

// defaultBackends are the two backends of docker-compose.yml.
var defaultBackends = []string{
	"a.example.com=federator.a-infra.example.net",
	"b.example.com=federator.b-infra.example.net",
}

// File modes: certificates are public; keys are private unless
// -readable-keys asks otherwise.
const (
	certMode        = 0o644
	keyMode         = 0o600
	readableKeyMode = 0o644
)

// Backend is one backend to issue a certificate for.
type Backend struct {
	Domain    string // e.g. a.example.com: names the files
	InfraHost string // the certificate's DNS SAN
}

// backendList is the repeatable -backend flag.
type backendList []Backend

func (l *backendList) String() string {
	var parts []string
	for _, b := range *l {
		parts = append(parts, b.Domain+"="+b.InfraHost)
	}
	return strings.Join(parts, ",")
}

func (l *backendList) Set(v string) error {
	b, err := parseBackend(v)
	if err != nil {
		return err
	}
	*l = append(*l, b)
	return nil
}

// parseBackend parses domain=infra-host.
func parseBackend(v string) (Backend, error) {
	domain, host, ok := strings.Cut(v, "=")
	if !ok {
		return Backend{}, fmt.Errorf("backend %q: want domain=infra-host", v)
	}
	d, err := contract.NormalizeDomain(domain)
	if err != nil {
		return Backend{}, fmt.Errorf("backend %q: domain: %w", v, err)
	}
	h, err := contract.NormalizeDomain(host)
	if err != nil {
		return Backend{}, fmt.Errorf("backend %q: infra host: %w", v, err)
	}
	return Backend{Domain: d, InfraHost: h}, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fedcerts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "bin/certs", "output directory (created)")
	readable := fs.Bool("readable-keys", false, "write the keys world-readable (0644) instead of 0600, for containers that run as another user: development only")
	var backends backendList
	fs.Var(&backends, "backend", "domain=infra-host, repeatable (default: "+strings.Join(defaultBackends, ", ")+")")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Line("fedcerts"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fedcerts: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if len(backends) == 0 {
		for _, v := range defaultBackends {
			if err := backends.Set(v); err != nil {
				fmt.Fprintln(stderr, "fedcerts:", err)
				return 2
			}
		}
	}
	km := os.FileMode(keyMode)
	if *readable {
		km = readableKeyMode
	}
	files, err := Write(ctx, *dir, backends, km)
	if err != nil {
		fmt.Fprintln(stderr, "fedcerts:", err)
		return 1
	}
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	return 0
}

// Write creates dir, a CA and one certificate per backend, and returns the
// files written; keys get keyMode.
func Write(ctx context.Context, dir string, backends []Backend, keyMode os.FileMode) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write certificates: %w", err)
	}
	ca, err := testbed.NewCA("fedbus development CA")
	if err != nil {
		return nil, fmt.Errorf("write certificates: %w", err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, certMode); err != nil {
		return nil, fmt.Errorf("write certificates: %w", err)
	}
	written := []string{caFile}
	for _, b := range backends {
		if err := ctx.Err(); err != nil {
			return written, fmt.Errorf("write certificates: %w", err)
		}
		leaf, err := ca.Issue(testbed.LeafOptions{}, b.InfraHost)
		if err != nil {
			return written, fmt.Errorf("write certificates for %s: %w", b.Domain, err)
		}
		f, err := leaf.WriteFiles(dir, b.Domain, ca.CertPEM)
		if err != nil {
			return written, fmt.Errorf("write certificates for %s: %w", b.Domain, err)
		}
		for name, mode := range map[string]os.FileMode{f.Cert: certMode, f.Key: keyMode, f.CA: certMode} {
			if err := os.Chmod(name, mode); err != nil {
				return written, fmt.Errorf("write certificates for %s: %w", b.Domain, err)
			}
		}
		written = append(written, f.Cert, f.Key, f.CA)
	}
	return written, nil
}
