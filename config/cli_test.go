package config

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// cliConfig is a stand-in for a binary's configuration.
type cliConfig struct {
	Common
	Extra int `env:"FED_TEST_EXTRA, default=1" desc:"an extra knob"`
}

func (c *cliConfig) Validate() error {
	var errs []error
	if err := c.Common.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Extra <= 0 {
		errs = append(errs, errors.New("FED_TEST_EXTRA must be positive"))
	}
	return errors.Join(errs...)
}

func TestFromEnvHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	_, err := FromEnv(context.Background(), Command{Prog: "federator", Args: []string{"-h"}, Out: &out}, &cfg)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("got %v, want ErrHelp", err)
	}
	for _, name := range []string{"FED_DOMAIN", "FED_NATS_URL", "FED_SUBJECT_PREFIX", "FED_DNS_SERVER", "FED_STRATEGY", "FED_ALLOW_LIST",
		"FED_TLS_CERT", "FED_TLS_KEY", "FED_TLS_CA", "FED_COMPONENTS", "FED_REQUEST_TIMEOUT", "FED_ALLOW_PRIVATE_TARGETS", "FED_TEST_EXTRA",
		"FED_OBJECT_BUCKET", "FED_OBJECT_TTL", "FED_MAX_OBJECT_BYTES", "FED_MAX_OBJECT_TRANSFERS", "FED_JETSTREAM_REPLICAS", "FED_NATS_IN_ORDER"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("-h does not list %s", name)
		}
	}
}

func TestFromEnvReportsEveryProblemAtOnce(t *testing.T) {
	t.Setenv("FED_DOMAIN", "")
	t.Setenv("FED_STRATEGY", "allow-some")
	t.Setenv("FED_ALLOW_LIST", "b..example.com")
	t.Setenv("FED_TLS_CERT", "")
	t.Setenv("FED_COMPONENTS", "BRIG")
	t.Setenv("FED_DNS_SERVER", "no-port")
	t.Setenv("FED_TEST_EXTRA", "0")
	t.Setenv("FED_OBJECT_BUCKET", "objects.x")
	t.Setenv("FED_OBJECT_TTL", "10ms")
	t.Setenv("FED_MAX_OBJECT_BYTES", "0")
	t.Setenv("FED_MAX_OBJECT_TRANSFERS", "-1")
	t.Setenv("FED_JETSTREAM_REPLICAS", "7")
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	_, err := FromEnv(context.Background(), Command{Prog: "federator", Out: &bytes.Buffer{}}, &cfg)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"FED_DOMAIN is required", "FED_STRATEGY", "FED_ALLOW_LIST", "FED_TLS_CERT is required", "FED_TLS_KEY is required",
		"FED_TLS_CA is required", "FED_COMPONENTS", "FED_DNS_SERVER", "FED_TEST_EXTRA",
		"FED_OBJECT_BUCKET", "FED_OBJECT_TTL", "FED_MAX_OBJECT_BYTES", "FED_MAX_OBJECT_TRANSFERS", "FED_JETSTREAM_REPLICAS 7 is not 1 to 5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestFromEnvRefusesArguments(t *testing.T) {
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	if _, err := FromEnv(context.Background(), Command{Prog: "ingress", Args: []string{"extra"}, Out: &bytes.Buffer{}}, &cfg); err == nil {
		t.Fatal("want an error for arguments")
	}
}

// TestFromEnvOneMistakeOneMessage: a value that cannot be parsed is
// reported once, by its variable, and does not make the variables that
// were never set look wrong.
func TestFromEnvOneMistakeOneMessage(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"FED_TLS_CERT", "FED_TLS_KEY", "FED_TLS_CA"} {
		t.Setenv(v, dir) // exists: only the parse error is left
	}
	t.Setenv("FED_DOMAIN", "a.example.com")
	t.Setenv("FED_REQUEST_TIMEOUT", "10")
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	_, err := FromEnv(context.Background(), Command{Prog: "federator", Out: &bytes.Buffer{}}, &cfg)
	if err == nil {
		t.Fatal("want an error")
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "FED_REQUEST_TIMEOUT") {
		t.Fatalf("error:\n%v\nwant the heading and one line naming FED_REQUEST_TIMEOUT", err)
	}
}

func TestUsageShowsTrueDefaults(t *testing.T) {
	var out bytes.Buffer
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	Usage(&out, &cfg)
	for _, want := range []string{`(default "brig,galley,cargohold")`, `(default "10s")`, `(default "allow-none")`, `(default "1")`,
		`(default "fedbus-objects")`, `(default "10m0s")`, `(default "104857600")`, `(default "32")`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %s:\n%s", want, out.String())
		}
	}
}
