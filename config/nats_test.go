package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// testSeed is a throwaway NKey user seed (TEST ONLY) and testPub its public
// key.
const (
	testSeed = "SUADL4JSGHIRRIL7EDC5M44F7NQ7L7LQTU3ZH42UXBICPDO4XGFJIUFNEY"
	testPub  = "UA3DN6NL4ENRQMEJ5WKMFYACC43SOLC7PZQ5J3F4URCISAT5VO2MP2PX"
	// testJWT only has the shape of a JWT: the client sends it as is, the
	// server checks it.
	testJWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJ0ZXN0In0.c2ln"
)

// natsFiles are the credential and TLS files of a test.
type natsFiles struct {
	creds, jwtOnly, nkey, ca, cert, key, junk, missing string
}

func writeNATSFiles(t testing.TB) natsFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	creds := "-----BEGIN NATS USER JWT-----\n" + testJWT + "\n------END NATS USER JWT------\n\n" +
		"************************* IMPORTANT *************************\n\n" +
		"-----BEGIN USER NKEY SEED-----\n" + testSeed + "\n------END USER NKEY SEED------\n"
	return natsFiles{
		creds:   write("user.creds", creds),
		jwtOnly: write("jwt-only.creds", "-----BEGIN NATS USER JWT-----\n"+testJWT+"\n------END NATS USER JWT------\n"),
		nkey:    write("user.nk", testSeed+"\n"),
		ca:      write("ca.pem", certPEM),
		cert:    write("cert.pem", certPEM),
		key:     write("key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))),
		junk:    write("junk", "not a credential\n"),
		missing: filepath.Join(dir, "missing"),
	}
}

// applied runs opts on nats.go's default options, as nats.Connect does.
func applied(t testing.TB, opts []nats.Option) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatalf("apply option: %v", err)
		}
	}
	return o
}

func TestNATSAuthOptions(t *testing.T) {
	f := writeNATSFiles(t)
	for _, tc := range []struct {
		name  string
		auth  NATSAuth
		nopts int
		check func(t *testing.T, o nats.Options)
	}{
		{"nothing set", NATSAuth{}, 0, func(t *testing.T, o nats.Options) {
			if o.User != "" || o.Token != "" || o.Nkey != "" || o.UserJWT != nil || o.Secure {
				t.Errorf("options changed: %+v", o)
			}
		}},
		{"user and password", NATSAuth{User: "brig", Password: "secret"}, 1, func(t *testing.T, o nats.Options) {
			if o.User != "brig" || o.Password != "secret" {
				t.Errorf("user %q password %q", o.User, o.Password)
			}
		}},
		{"user without password", NATSAuth{User: "brig"}, 1, func(t *testing.T, o nats.Options) {
			if o.User != "brig" || o.Password != "" {
				t.Errorf("user %q password %q", o.User, o.Password)
			}
		}},
		{"token", NATSAuth{Token: "s3cret"}, 1, func(t *testing.T, o nats.Options) {
			if o.Token != "s3cret" {
				t.Errorf("token %q", o.Token)
			}
		}},
		{"nkey seed", NATSAuth{NKeySeed: f.nkey}, 1, func(t *testing.T, o nats.Options) {
			if o.Nkey != testPub || o.SignatureCB == nil {
				t.Fatalf("nkey %q, signature callback set: %v", o.Nkey, o.SignatureCB != nil)
			}
			if sig, err := o.SignatureCB([]byte("nonce")); err != nil || len(sig) == 0 {
				t.Errorf("sign: %v", err)
			}
		}},
		{"credentials file", NATSAuth{Creds: f.creds}, 1, func(t *testing.T, o nats.Options) {
			if o.UserJWT == nil || o.SignatureCB == nil {
				t.Fatal("no JWT or signature callback")
			}
			if jwt, err := o.UserJWT(); err != nil || jwt != testJWT {
				t.Errorf("jwt %q, %v", jwt, err)
			}
		}},
		{"server CA", NATSAuth{TLSCA: f.ca}, 1, func(t *testing.T, o nats.Options) {
			if !o.Secure || o.RootCAsCB == nil {
				t.Errorf("secure %v, root CAs set %v", o.Secure, o.RootCAsCB != nil)
			}
		}},
		{"client certificate", NATSAuth{TLSCert: f.cert, TLSKey: f.key}, 1, func(t *testing.T, o nats.Options) {
			if !o.Secure || o.TLSCertCB == nil {
				t.Errorf("secure %v, client cert set %v", o.Secure, o.TLSCertCB != nil)
			}
		}},
		{"inbox prefix", NATSAuth{InboxPrefix: "_INBOX_brig"}, 1, func(t *testing.T, o nats.Options) {
			if o.InboxPrefix != "_INBOX_brig" {
				t.Errorf("inbox prefix %q", o.InboxPrefix)
			}
		}},
		{"user, TLS and inbox together", NATSAuth{User: "ingress", Password: "p", TLSCA: f.ca, TLSCert: f.cert, TLSKey: f.key, InboxPrefix: "_INBOX_ingress"}, 4, func(t *testing.T, o nats.Options) {
			if o.User != "ingress" || !o.Secure || o.RootCAsCB == nil || o.TLSCertCB == nil || o.InboxPrefix != "_INBOX_ingress" {
				t.Errorf("got %+v", o)
			}
		}},
		{"nkey with a client certificate", NATSAuth{NKeySeed: f.nkey, TLSCert: f.cert, TLSKey: f.key}, 2, func(t *testing.T, o nats.Options) {
			if o.Nkey != testPub || o.TLSCertCB == nil {
				t.Errorf("nkey %q, client cert set %v", o.Nkey, o.TLSCertCB != nil)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := tc.auth.validate(); len(errs) != 0 {
				t.Fatalf("validate: %v", errs)
			}
			opts, err := tc.auth.Options()
			if err != nil {
				t.Fatalf("Options: %v", err)
			}
			if len(opts) != tc.nopts {
				t.Errorf("%d options, want %d", len(opts), tc.nopts)
			}
			tc.check(t, applied(t, opts))
		})
	}
}

func TestNATSAuthOptionsErrors(t *testing.T) {
	f := writeNATSFiles(t)
	for _, tc := range []struct {
		name string
		auth NATSAuth
		// want are substrings of the error; validate is whether validate()
		// reports it (the others are found when the file is read).
		want     []string
		validate bool
		is       error
	}{
		{"user and token", NATSAuth{User: "brig", Token: "t"}, []string{"set only one of"}, true, nil},
		{"creds and nkey", NATSAuth{Creds: f.creds, NKeySeed: f.nkey}, []string{"set only one of"}, true, nil},
		{"nkey and user", NATSAuth{NKeySeed: f.nkey, User: "brig", Password: "p"}, []string{"set only one of"}, true, nil},
		{"password without user", NATSAuth{Password: "p"}, []string{"FED_NATS_PASSWORD needs FED_NATS_USER"}, true, nil},
		{"password with a token", NATSAuth{Token: "t", Password: "p"}, []string{"FED_NATS_PASSWORD needs FED_NATS_USER"}, true, nil},
		{"cert without key", NATSAuth{TLSCert: f.cert}, []string{"go together"}, true, nil},
		{"key without cert", NATSAuth{TLSKey: f.key}, []string{"go together"}, true, nil},
		{"missing nkey file", NATSAuth{NKeySeed: f.missing}, []string{"FED_NATS_NKEY"}, true, fs.ErrNotExist},
		{"missing creds file", NATSAuth{Creds: f.missing}, []string{"FED_NATS_CREDS"}, true, fs.ErrNotExist},
		{"missing CA file", NATSAuth{TLSCA: f.missing}, []string{"FED_NATS_TLS_CA"}, true, fs.ErrNotExist},
		{"missing key file", NATSAuth{TLSCert: f.cert, TLSKey: f.missing}, []string{"FED_NATS_TLS_KEY"}, true, fs.ErrNotExist},
		{"bad inbox prefix wildcard", NATSAuth{InboxPrefix: "_INBOX.>"}, []string{"FED_NATS_INBOX_PREFIX"}, true, nil},
		{"bad inbox prefix empty token", NATSAuth{InboxPrefix: "_INBOX..x"}, []string{"FED_NATS_INBOX_PREFIX"}, true, nil},
		{"bad inbox prefix trailing dot", NATSAuth{InboxPrefix: "_INBOX_brig."}, []string{"FED_NATS_INBOX_PREFIX"}, true, nil},
		{"bad inbox prefix space", NATSAuth{InboxPrefix: "_INBOX brig"}, []string{"FED_NATS_INBOX_PREFIX"}, true, nil},
		{"every problem at once", NATSAuth{User: "u", Token: "t", TLSKey: f.key, InboxPrefix: "*", TLSCA: f.missing},
			[]string{"set only one of", "go together", "FED_NATS_INBOX_PREFIX", "FED_NATS_TLS_CA"}, true, fs.ErrNotExist},
		// files that exist but hold no credential
		{"nkey file without a seed", NATSAuth{NKeySeed: f.junk}, []string{"read FED_NATS_NKEY " + f.junk}, false, nil},
		{"nkey file with a public key", NATSAuth{NKeySeed: f.ca}, []string{"read FED_NATS_NKEY"}, false, nil},
		{"creds file without a JWT", NATSAuth{Creds: f.junk}, []string{"read FED_NATS_CREDS " + f.junk}, false, nil},
		{"creds file without a seed", NATSAuth{Creds: f.jwtOnly}, []string{"read FED_NATS_CREDS"}, false, nil},
		{"CA file without a certificate", NATSAuth{TLSCA: f.junk}, []string{"load FED_NATS_TLS_CA " + f.junk}, false, nil},
		{"certificate file without a certificate", NATSAuth{TLSCert: f.junk, TLSKey: f.key}, []string{"load FED_NATS_TLS_CERT"}, false, nil},
		{"key file without a key", NATSAuth{TLSCert: f.cert, TLSKey: f.junk}, []string{"load FED_NATS_TLS_CERT", "FED_NATS_TLS_KEY " + f.junk}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verr := errors.Join(tc.auth.validate()...)
			if (verr != nil) != tc.validate {
				t.Errorf("validate: %v, want an error: %v", verr, tc.validate)
			}
			opts, err := tc.auth.Options()
			if err == nil {
				t.Fatalf("Options: %d options and no error", len(opts))
			}
			if opts != nil {
				t.Errorf("Options returned options with the error %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

func TestNATSAuthInCommon(t *testing.T) {
	// Common.Validate reports NATS problems with the others.
	c := Common{NATS: NATSAuth{User: "u", Token: "t"}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "set only one of FED_NATS_CREDS") {
		t.Errorf("Validate: %v", err)
	}
}
