package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATSAuth is how a fedbus process authenticates to NATS. All fields are
// optional; set at most one of Creds, NKeySeed, User/Password or Token.
// deploy/nats/fedbus.conf is a server configuration that matches them.
type NATSAuth struct {
	Creds       string `env:"FED_NATS_CREDS" desc:"NATS credentials file (JWT + NKey seed)"`
	NKeySeed    string `env:"FED_NATS_NKEY" desc:"file with an NKey seed (user NKey authentication)"`
	User        string `env:"FED_NATS_USER" desc:"NATS user name"`
	Password    string `env:"FED_NATS_PASSWORD" secret:"true" desc:"NATS password"`
	Token       string `env:"FED_NATS_TOKEN" secret:"true" desc:"NATS token"`
	TLSCA       string `env:"FED_NATS_TLS_CA" desc:"PEM CA bundle to verify the NATS server"`
	TLSCert     string `env:"FED_NATS_TLS_CERT" desc:"client certificate for NATS (TLS authentication)"`
	TLSKey      string `env:"FED_NATS_TLS_KEY" desc:"client key for NATS"`
	InboxPrefix string `env:"FED_NATS_INBOX_PREFIX" desc:"prefix of this process's reply subjects (NATS default _INBOX); set it to the one the NATS permissions give this user, e.g. _INBOX_federator"`
}

// Options returns the nats.go options for this authentication (none when
// nothing is set). Files are read now, so that a missing or malformed
// credentials, seed, certificate or CA file fails at start with the name
// of its variable rather than at the first connection attempt.
func (a NATSAuth) Options() ([]nats.Option, error) {
	if errs := a.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("nats auth: %w", errors.Join(errs...))
	}
	var opts []nats.Option
	switch {
	case a.Creds != "":
		opt := nats.UserCredentials(a.Creds)
		if err := checkCreds(opt); err != nil {
			return nil, fmt.Errorf("read FED_NATS_CREDS %s: %w", a.Creds, err)
		}
		opts = append(opts, opt)
	case a.NKeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(a.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("read FED_NATS_NKEY %s: %w", a.NKeySeed, err)
		}
		opts = append(opts, opt)
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	}
	if a.TLSCA != "" {
		opt := nats.RootCAs(a.TLSCA)
		if err := apply(opt); err != nil {
			return nil, fmt.Errorf("load FED_NATS_TLS_CA %s: %w", a.TLSCA, err)
		}
		opts = append(opts, opt)
	}
	if a.TLSCert != "" {
		opt := nats.ClientCert(a.TLSCert, a.TLSKey)
		if err := apply(opt); err != nil {
			return nil, fmt.Errorf("load FED_NATS_TLS_CERT %s and FED_NATS_TLS_KEY %s: %w", a.TLSCert, a.TLSKey, err)
		}
		opts = append(opts, opt)
	}
	if a.InboxPrefix != "" {
		opt := nats.CustomInboxPrefix(a.InboxPrefix)
		if err := apply(opt); err != nil {
			return nil, fmt.Errorf("set FED_NATS_INBOX_PREFIX %q: %w", a.InboxPrefix, err)
		}
		opts = append(opts, opt)
	}
	return opts, nil
}

// apply runs opt on scratch options: the TLS options load their files then.
func apply(opt nats.Option) error {
	o := nats.GetDefaultOptions()
	return opt(&o)
}

// checkCreds reads the JWT and signs a nonce with the seed of a
// credentials option, as nats.go does on connect.
func checkCreds(opt nats.Option) error {
	o := nats.GetDefaultOptions()
	if err := opt(&o); err != nil {
		return err
	}
	if _, err := o.UserJWT(); err != nil {
		return err
	}
	if _, err := o.SignatureCB([]byte("fedbus")); err != nil {
		return err
	}
	return nil
}

func (a NATSAuth) validate() []error {
	var errs []error
	n := 0
	for _, set := range []bool{a.Creds != "", a.NKeySeed != "", a.User != "", a.Token != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, fmt.Errorf("set only one of FED_NATS_CREDS, FED_NATS_NKEY, FED_NATS_USER, FED_NATS_TOKEN"))
	}
	if a.Password != "" && a.User == "" {
		errs = append(errs, fmt.Errorf("FED_NATS_PASSWORD needs FED_NATS_USER"))
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		errs = append(errs, fmt.Errorf("FED_NATS_TLS_CERT and FED_NATS_TLS_KEY go together"))
	}
	if a.InboxPrefix != "" && !validInboxPrefix(a.InboxPrefix) {
		errs = append(errs, fmt.Errorf("FED_NATS_INBOX_PREFIX %q is not a subject of [A-Za-z0-9_$-] tokens", a.InboxPrefix))
	}
	for _, f := range []struct{ name, path string }{
		{"FED_NATS_CREDS", a.Creds}, {"FED_NATS_NKEY", a.NKeySeed},
		{"FED_NATS_TLS_CA", a.TLSCA}, {"FED_NATS_TLS_CERT", a.TLSCert}, {"FED_NATS_TLS_KEY", a.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	return errs
}

// validInboxPrefix accepts a literal subject (no wildcard, no empty token)
// of conservative characters.
func validInboxPrefix(p string) bool {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '$') {
				return false
			}
		}
	}
	return true
}
