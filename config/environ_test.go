package config

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func TestCheckEnviron(t *testing.T) {
	known := Variables(&cliConfig{})
	// No variable of the contract is reserved now (FED_OPS_ADDR is used):
	// the rule is tested with one made up.
	defer func(r []string) { Reserved = r }(Reserved)
	Reserved = []string{"FED_RESERVED_FOR_LATER"}
	tests := []struct {
		name     string
		environ  []string
		wantErr  string // substring of the one error; "" for none
		wantWarn string // substring of the one warning; "" for none
	}{
		{name: "known variables", environ: []string{"FED_DOMAIN=a.example.com", "FED_ALLOW_LIST=b.example.com", "PATH=/bin"}},
		{name: "typo of a known variable", environ: []string{"FED_ALLOW_LIS=b.example.com"}, wantErr: "FED_ALLOW_LIS is not a fedbus variable: did you mean FED_ALLOW_LIST?"},
		{name: "plural", environ: []string{"FED_NATS_URLS=nats://x:4222"}, wantErr: "did you mean FED_NATS_URL?"},
		{name: "lower case", environ: []string{"fed_domain=a.example.com"}, wantErr: "fed_domain is not a fedbus variable: did you mean FED_DOMAIN?"},
		{name: "unlike any variable", environ: []string{"FED_SOMETHING_ELSE_ENTIRELY=1"}, wantWarn: "FED_SOMETHING_ELSE_ENTIRELY is not a fedbus variable: ignored"},
		{name: "reserved by the contract", environ: []string{"FED_RESERVED_FOR_LATER=1"}, wantWarn: "FED_RESERVED_FOR_LATER is not used by this version"},
		{name: "kubernetes service links", environ: []string{"FED_SERVICE_HOST=10.0.0.1", "FED_SERVICE_PORT=8443", "FED_SERVICE_PORT_HTTPS=8443", "FED_PORT=tcp://10.0.0.1:8443", "FED_PORT_8443_TCP=tcp://10.0.0.1:8443", "FED_PORT_8443_TCP_PROTO=tcp", "FED_PORT_8443_TCP_ADDR=10.0.0.1"}},
		{name: "other prefixes", environ: []string{"FEDBUS_TEST_LOG=1", "FEDERATION=x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs, warns := CheckEnviron(tt.environ, known)
			switch {
			case tt.wantErr == "" && len(errs) > 0:
				t.Errorf("errors %v", errs)
			case tt.wantErr != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr)):
				t.Errorf("errors %v, want one with %q", errs, tt.wantErr)
			}
			switch {
			case tt.wantWarn == "" && len(warns) > 0:
				t.Errorf("warnings %v", warns)
			case tt.wantWarn != "" && (len(warns) != 1 || !strings.Contains(warns[0], tt.wantWarn)):
				t.Errorf("warnings %v, want one with %q", warns, tt.wantWarn)
			}
		})
	}
}

// validEnv sets a valid configuration of cliConfig in the environment.
func validEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, v := range []string{"FED_TLS_CERT", "FED_TLS_KEY", "FED_TLS_CA"} {
		t.Setenv(v, dir)
	}
	t.Setenv("FED_DOMAIN", "a.example.com")
}

// TestFromEnvRefusesTypos: a FED_* variable that is a typo of a known one
// (the operator meant FED_ALLOW_LIST, and the allow list stays empty) is
// refused with the name meant; the other binaries' variables are not.
func TestFromEnvRefusesTypos(t *testing.T) {
	validEnv(t)
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	environ := []string{"FED_DOMAIN=a.example.com", "FED_ALLOW_LIS=b.example.com", "FED_INGRESS_ADDR=:8443"}
	_, err := FromEnv(context.Background(), Command{Prog: "federator", Out: &bytes.Buffer{}, Environ: environ, Known: []string{"FED_INGRESS_ADDR"}}, &cfg)
	if err == nil || !strings.Contains(err.Error(), "FED_ALLOW_LIS is not a fedbus variable: did you mean FED_ALLOW_LIST?") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "FED_INGRESS_ADDR") {
		t.Errorf("a variable of another binary is refused: %v", err)
	}
	warns, err := FromEnv(context.Background(), Command{Prog: "federator", Out: &bytes.Buffer{}, Environ: []string{"FED_UNRELATED_THING_HERE=1"}}, &cfg)
	if err != nil || len(warns) != 1 {
		t.Errorf("got %v, %v; want one warning", warns, err)
	}
}

func TestFromEnvVersion(t *testing.T) {
	var out bytes.Buffer
	cfg := cliConfig{Common: DefaultCommon(), Extra: 1}
	_, err := FromEnv(context.Background(), Command{Prog: "ingress", Args: []string{"-version"}, Out: &out}, &cfg)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("got %v, want ErrVersion", err)
	}
	if !strings.HasPrefix(out.String(), "ingress dev (") {
		t.Errorf("-version printed %q", out.String())
	}
}

// TestStrategyAndListAgree: a list the strategy ignores, and allow-list
// with nothing to allow, are refused with the fix.
func TestStrategyAndListAgree(t *testing.T) {
	tests := []struct {
		name     string
		strategy string
		list     []string
		bucket   string
		want     string // "" for valid
	}{
		{name: "allow-list with a list", strategy: "allow-list", list: []string{"b.example.com"}},
		{name: "allow-list with a bucket only", strategy: "allow-list", bucket: "fedbus"},
		{name: "allow-list with nothing", strategy: "allow-list", want: "FED_STRATEGY=allow-list with an empty FED_ALLOW_LIST and no FED_KV_BUCKET allows no domain"},
		{name: "allow-all with a list", strategy: "allow-all", list: []string{"b.example.com"}, bucket: "fedbus", want: "FED_ALLOW_LIST is set but FED_STRATEGY=allow-all ignores it"},
		{name: "allow-none with a list", strategy: "allow-none", list: []string{"b.example.com"}, want: "FED_ALLOW_LIST is set but FED_STRATEGY=allow-none ignores it"},
		{name: "allow-all alone", strategy: "allow-all"},
		{name: "allow-none alone", strategy: "allow-none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultCommon()
			c.Strategy, c.AllowList, c.KVBucket = tt.strategy, tt.list, tt.bucket
			err := c.checkStrategyList()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestEmptyValue: a text or list variable set to "" is empty (the default
// does not come back); an unset one keeps its default.
func TestEmptyValue(t *testing.T) {
	c := DefaultCommon()
	env := map[string]string{"FED_KV_BUCKET": "", "FED_ALLOW_LIST": "", "FED_REQUEST_TIMEOUT": ""}
	if err := Load(context.Background(), &c, envconfig.MapLookuper(env)); err != nil {
		t.Fatal(err)
	}
	if c.KVBucket != "" || len(c.AllowList) != 0 {
		t.Errorf("FED_KV_BUCKET %q, FED_ALLOW_LIST %q: want both empty", c.KVBucket, c.AllowList)
	}
	if d := DefaultCommon(); c.RequestTimeout != d.RequestTimeout || c.Strategy != d.Strategy {
		t.Errorf("defaults lost: %v %q", c.RequestTimeout, c.Strategy)
	}
}

// TestSettingsShowNoSecret: the start-up line shows every variable and no
// secret.
func TestSettingsShowNoSecret(t *testing.T) {
	c := DefaultCommon()
	c.NATSURL = "nats://brig:hunter2@n1:4222,tls://tok3n@n2:4222"
	c.NATS.User, c.NATS.Password, c.NATS.Token = "brig", "hunter2", ""
	got := map[string]string{}
	for _, a := range Settings(&c) {
		got[a.Key] = a.Value.String()
	}
	for _, name := range Variables(&c) {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for k, v := range got {
		if strings.Contains(v, "hunter2") || strings.Contains(v, "tok3n") {
			t.Errorf("%s shows a secret: %q", k, v)
		}
	}
	if got["FED_NATS_URL"] != "nats://brig:xxxxx@n1:4222,tls://xxxxx@n2:4222" || got["FED_NATS_PASSWORD"] != "[set]" || got["FED_NATS_TOKEN"] != "" || got["FED_COMPONENTS"] != "brig,galley,cargohold" {
		t.Errorf("settings %v", got)
	}
}
