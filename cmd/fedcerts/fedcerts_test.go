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
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-dir", dir}, &out, &errOut); code != 0 {
		t.Fatalf("exit status %d: %s", code, errOut.String())
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
		info, err := os.Stat(filepath.Join(dir, domain+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != fileMode {
			t.Errorf("%s.key mode %v, want %v", domain, info.Mode().Perm(), os.FileMode(fileMode))
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
