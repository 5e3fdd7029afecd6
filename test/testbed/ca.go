package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedbus/fedbus/tlsconf"
)

// CA is a throwaway certificate authority for tests and the demo.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA creates a self-signed CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Leaf is a certificate issued by a CA, with its key, in PEM.
type Leaf struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

// LeafOptions adjusts an issued certificate.
type LeafOptions struct {
	// Usages defaults (when nil) to serverAuth and clientAuth; an empty,
	// non-nil slice issues a certificate without extended key usages.
	Usages []x509.ExtKeyUsage
	// NotAfter defaults to 24 hours from now.
	NotAfter time.Time
	// NotBefore defaults to an hour ago.
	NotBefore time.Time
	// CommonName defaults to the first DNS name.
	CommonName string
	// IPAddresses are IP SANs, beside the DNS names.
	IPAddresses []net.IP
}

// Issue issues a certificate with the given DNS SANs (the first is also the
// common name, unless opts.CommonName is set).
func (ca *CA) Issue(opts LeafOptions, dnsNames ...string) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	usages := opts.Usages
	if usages == nil {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	notAfter := opts.NotAfter
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	notBefore := opts.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	cn := opts.CommonName
	if cn == "" && len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		IPAddresses:  opts.IPAddresses,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return &Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		Cert:    cert,
	}, nil
}

// TLSCertificate returns the leaf as a tls.Certificate.
func (l *Leaf) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(l.CertPEM, l.KeyPEM)
}

// Files are the PEM files of a backend's TLS material.
type Files struct {
	Cert, Key, CA string
}

// WriteFiles writes leaf, key and the CA bundle caPEM into dir as
// <name>.crt, <name>.key and <name>-ca.crt.
func (l *Leaf) WriteFiles(dir, name string, caPEM []byte) (Files, error) {
	f := Files{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		CA:   filepath.Join(dir, name+"-ca.crt"),
	}
	for path, data := range map[string][]byte{f.Cert: l.CertPEM, f.Key: l.KeyPEM, f.CA: caPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return Files{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return f, nil
}

// CertStore writes leaf and the CA into a temporary directory of tb (as
// WriteFiles does) and loads them with tlsconf.Load, as the federator and the
// ingress load their TLS material. It fails tb on error.
func (ca *CA) CertStore(tb testing.TB, leaf *Leaf) *tlsconf.Store {
	tb.Helper()
	files, err := leaf.WriteFiles(tb.TempDir(), "tls", ca.CertPEM)
	if err != nil {
		tb.Fatal(err)
	}
	store, err := tlsconf.Load(tlsconf.Files{Cert: files.Cert, Key: files.Key, CA: files.CA}, "")
	if err != nil {
		tb.Fatalf("load certs: %v", err)
	}
	return store
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
