package config

import (
	"fmt"
	"os"
)

// NATSAuth is how a fedbus process authenticates to NATS. All fields are
// optional; set at most one of Creds, NKeySeed, User/Password or Token.
type NATSAuth struct {
	Creds    string `env:"FED_NATS_CREDS" desc:"NATS credentials file (JWT + NKey seed)"`
	NKeySeed string `env:"FED_NATS_NKEY" desc:"file with an NKey seed (user NKey authentication)"`
	User     string `env:"FED_NATS_USER" desc:"NATS user name"`
	Password string `env:"FED_NATS_PASSWORD" desc:"NATS password"`
	Token    string `env:"FED_NATS_TOKEN" desc:"NATS token"`
	TLSCA    string `env:"FED_NATS_TLS_CA" desc:"PEM CA bundle to verify the NATS server"`
	TLSCert  string `env:"FED_NATS_TLS_CERT" desc:"client certificate for NATS (TLS authentication)"`
	TLSKey   string `env:"FED_NATS_TLS_KEY" desc:"client key for NATS"`
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
	for name, path := range map[string]string{"FED_NATS_CREDS": a.Creds, "FED_NATS_NKEY": a.NKeySeed, "FED_NATS_TLS_CA": a.TLSCA, "FED_NATS_TLS_CERT": a.TLSCert, "FED_NATS_TLS_KEY": a.TLSKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errs
}
