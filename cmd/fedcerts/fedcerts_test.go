package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBackend(t *testing.T) {
	tests := []struct {
		in      string
		want    Backend
		wantErr bool
	}{
		{"a.example.com=federator.a-infra.example.net", Backend{"a.example.com", "federator.a-infra.example.net"}, false},
		{"A.Example.COM=Fed.A-Infra.example.net", Backend{"a.example.com", "fed.a-infra.example.net"}, false},
		{"a.example.com", Backend{}, true},
		{"a..example.com=x.example.net", Backend{}, true},
		{"a.example.com=*", Backend{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBackend(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRunWritesVerifiableCertificates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		keyMode os.FileMode
	}{
		{name: "private keys", keyMode: keyMode},
		{name: "readable keys for containers", args: []string{"-readable-keys"}, keyMode: readableKeyMode},
	} {
		t.Run(tc.name, func(t *testing.T) { writeAndVerify(t, tc.args, tc.keyMode) })
	}
}

// writeAndVerify runs fedcerts with args and checks every file it lists
// (the files of docs/compose.md) and their modes.
func writeAndVerify(t *testing.T, args []string, wantKeyMode os.FileMode) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), append([]string{"-dir", dir}, args...), &out, &errOut); code != 0 {
		t.Fatalf("exit status %d: %s", code, errOut.String())
	}
	wantFiles := []string{"ca.crt", "a.example.com.crt", "a.example.com.key", "a.example.com-ca.crt", "b.example.com.crt", "b.example.com.key", "b.example.com-ca.crt"}
	for _, f := range wantFiles {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(certMode)
		if strings.HasSuffix(f, ".key") {
			want = wantKeyMode
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", f, info.Mode().Perm(), want)
		}
	}
	if n := len(strings.Fields(out.String())); n != 7 {
		t.Errorf("%d files listed, want 7:\n%s", n, out.String())
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	for domain, host := range map[string]string{"a.example.com": "federator.a-infra.example.net", "b.example.com": "federator.b-infra.example.net"} {
		data, err := os.ReadFile(filepath.Join(dir, domain+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s.crt is not PEM", domain)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s: %v", domain, err)
			}
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"help", []string{"-h"}, 0},
		{"version", []string{"-version"}, 0},
		{"bad backend", []string{"-backend", "nope"}, 2},
		{"extra argument", []string{"x"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &out); code != tc.code {
				t.Errorf("exit status %d, want %d: %s", code, tc.code, out.String())
			}
		})
	}
}
