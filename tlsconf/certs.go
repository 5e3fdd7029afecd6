// Package certs loads this backend's certificate, key and trusted CAs and
// builds the TLS configurations of the federator (client) and the ingress
// (server). The material sits behind an atomic pointer: Watch reloads it
// when the files change (including the atomic symlink swap of Kubernetes
// secrets), new connections use it at once, open ones are not disturbed,
// and a broken new file keeps the previous material in use.
package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
)

// Errors of loading.
var (
	ErrNoCA       = errors.New("no CA certificate in PEM bundle")
	ErrKeyUsage   = errors.New("certificate lacks the serverAuth and clientAuth extended key usages")
	ErrBadVersion = errors.New("TLS version must be 1.2 or 1.3")
	errUnchanged  = errors.New("files unchanged")
)

// Files names the PEM files of the material.
type Files struct {
	Cert, Key, CA string
}

// material is one immutable loaded set.
type material struct {
	cert   *tls.Certificate
	leaf   *x509.Certificate
	pool   *x509.CertPool
	server *tls.Config
	sum    [sha256.Size]byte
}

// Store holds the current material.
type Store struct {
	files      Files
	minVersion uint16
	cur        atomic.Pointer[material]
}

// Load reads the files and returns a store whose TLS configurations
// accept minVersion ("1.3" or "1.2"; "" is "1.3") and later.
func Load(files Files, minVersion string) (*Store, error) {
	s := &Store{files: files}
	switch minVersion {
	case "1.3", "":
		s.minVersion = tls.VersionTLS13
	case "1.2":
		s.minVersion = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("load certificates: %q: %w", minVersion, ErrBadVersion)
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again; on error the previous material stays. It
// reports errUnchanged (not exported; Reload returns nil then) when the
// files did not change.
func (s *Store) Reload() error {
	err := s.reload()
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

func (s *Store) reload() error {
	certPEM, err := os.ReadFile(s.files.Cert)
	if err != nil {
		return fmt.Errorf("load certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.files.Key)
	if err != nil {
		return fmt.Errorf("load key: %w", err)
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, {0}, keyPEM, {0}, caPEM} {
		h.Write(b)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	if old := s.cur.Load(); old != nil && old.sum == sum {
		return errUnchanged
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", s.files.Cert, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("load certificate %s: %w", s.files.Cert, err)
		}
	}
	if !hasUsage(leaf, x509.ExtKeyUsageServerAuth) || !hasUsage(leaf, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("load certificate %s: %w", s.files.Cert, ErrKeyUsage)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("load CA %s: %w", s.files.CA, ErrNoCA)
	}
	m := &material{cert: &cert, leaf: leaf, pool: pool, sum: sum}
	m.server = &tls.Config{
		MinVersion:   s.minVersion,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{cert},
		// A missing client certificate gets through the handshake and is
		// refused by the ingress (no-client-certificate); an untrusted one
		// (or one without clientAuth usage) fails the handshake.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
	}
	s.cur.Store(m)
	return nil
}

// hasUsage reports whether the certificate may be used for u (a
// certificate without extended key usages may be used for anything).
func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) || slices.Contains(c.ExtKeyUsage, u)
}

// Pool returns the current trusted CAs.
func (s *Store) Pool() *x509.CertPool { return s.cur.Load().pool }

// Certificate returns the current certificate of this backend.
func (s *Store) Certificate() *tls.Certificate { return s.cur.Load().cert }

// Leaf returns the parsed current certificate.
func (s *Store) Leaf() *x509.Certificate { return s.cur.Load().leaf }

// ClientConfigFor returns the federator's TLS configuration for one server
// name: our client certificate, the server verified for that name against
// the current CA bundle (serverAuth usage required, as crypto/tls does),
// ALPN h2.
func (s *Store) ClientConfigFor(serverName string) *tls.Config {
	m := s.cur.Load()
	return &tls.Config{
		MinVersion: s.minVersion,
		NextProtos: []string{"h2"},
		ServerName: serverName,
		RootCAs:    m.pool,
		// Always present our certificate, even when its issuer is not in
		// the server's list of acceptable CAs, so that the remote can say
		// why it refuses it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.cert, nil
		},
	}
}

// ServerConfig is the ingress's TLS configuration; every handshake uses the
// material current at that moment.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: s.minVersion,
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().server, nil
		},
	}
}
