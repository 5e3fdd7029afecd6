// Package certs loads this backend's certificate, key and trusted CAs and
// builds the TLS configurations of the federator (client) and the ingress
// (server). The material is held behind an atomic pointer so that it can be
// replaced at run time (Reload) without touching open connections.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// ErrNoCA is returned when the CA file holds no certificate.
var ErrNoCA = errors.New("no CA certificate in PEM bundle")

// Files names the PEM files of the material.
type Files struct {
	Cert, Key, CA string
}

// material is one immutable loaded set.
type material struct {
	cert *tls.Certificate
	pool *x509.CertPool
}

// Store holds the current material.
type Store struct {
	files Files
	cur   atomic.Pointer[material]
}

// Load reads the files and returns a store.
func Load(files Files) (*Store, error) {
	s := &Store{files: files}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again; on error the previous material stays.
func (s *Store) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", s.files.Cert, err)
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("load CA %s: %w", s.files.CA, ErrNoCA)
	}
	s.cur.Store(&material{cert: &cert, pool: pool})
	return nil
}

// Pool returns the current trusted CAs.
func (s *Store) Pool() *x509.CertPool { return s.cur.Load().pool }

// Certificate returns the current certificate of this backend.
func (s *Store) Certificate() *tls.Certificate { return s.cur.Load().cert }

// ClientConfig is the federator's TLS configuration: TLS 1.3, our client
// certificate, server certificates verified against the CA bundle (the
// server name is set per connection).
func (s *Store) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.Certificate(), nil
		},
		// RootCAs is resolved per handshake so that a reload applies to new
		// connections.
		InsecureSkipVerify: false,
	}
}

// ClientConfigFor returns the client configuration for one server name,
// with the current CA pool.
func (s *Store) ClientConfigFor(serverName string) *tls.Config {
	c := s.ClientConfig()
	c.ServerName = serverName
	c.RootCAs = s.Pool()
	return c
}

// ServerConfig is the ingress's TLS configuration: TLS 1.3, client
// certificates requested and, when given, verified against the CA bundle
// (the handshake fails for an untrusted one; a missing one is refused by
// the ingress with no-client-certificate).
func (s *Store) ServerConfig() *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"},
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.cur.Load()
		return &tls.Config{
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"h2", "http/1.1"},
			Certificates: []tls.Certificate{*m.cert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    m.pool,
		}, nil
	}
	return base
}
