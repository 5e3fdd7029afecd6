package redact

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestURLs(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no user information", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://fed:s3cret@127.0.0.1:4222", "nats://fed:xxxxx@127.0.0.1:4222"},
		{"token", "nats://t0ken@127.0.0.1:4222", "nats://xxxxx@127.0.0.1:4222"},
		{"several", "nats://a:pw1@h1:4222,nats://h2:4222,tls://tok@h3", "nats://a:xxxxx@h1:4222,nats://h2:4222,tls://xxxxx@h3"},
		{"at in password", "nats://u:p@ss@host", "nats://u:xxxxx@host"},
		{"no scheme", "u:pw@host:4222", "u:xxxxx@host:4222"},
		{"at after the authority", "nats://host/x@y", "nats://host/x@y"},
		{"not a URL", "nats://user:s3cret@%zz", "nats://user:xxxxx@%zz"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := URLs(tc.in); got != tc.want {
				t.Errorf("URLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestURLError(t *testing.T) {
	sentinel := errors.New("nats: no servers available for connection")
	tests := []struct {
		name   string
		urls   string
		err    error
		secret string
		is     error // errors.Is target, nil: none
	}{
		{"url.Error quoting the URL", "nats://fed:s3cret-pw@host:bad", &url.Error{Op: "parse", URL: "nats://fed:s3cret-pw@host:bad", Err: errors.New(`invalid port ":bad" after host`)}, "s3cret-pw", nil},
		{"secret with a quote", `nats://fed:se"cret@host:bad`, &url.Error{Op: "parse", URL: `nats://fed:se"cret@host:bad`, Err: errors.New("invalid port")}, `se"cret`, nil},
		{"token in the text", "nats://t0ken-abc@host", errors.New("dial t0ken-abc failed"), "t0ken-abc", nil},
		{"sentinel kept", "nats://u:pw-long@host", sentinel, "pw-long", sentinel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := URLError("connect nats", tc.urls, tc.err)
			if strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q contains the secret %q", err, tc.secret)
			}
			for e := err; e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), tc.secret) {
					t.Errorf("wrapped error %q contains the secret", e)
				}
			}
			if !strings.HasPrefix(err.Error(), "connect nats ") {
				t.Errorf("error %q lacks its prefix", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
	if URLError("x", "y", nil) != nil {
		t.Error("URLError of nil is not nil")
	}
}
