package ingress

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/fedbus/fedbus/config"
)

// Defaults applied by New to zero fields of a Config built in code (the
// environment gives the same defaults through the env tags).
const (
	DefaultAddr           = ":8443"
	DefaultMaxBodyBytes   = 1 << 20
	DefaultRequestTimeout = 10 * time.Second
	DefaultSubjectPrefix  = "fed"
)

// DefaultComponents returns the default of FED_COMPONENTS.
func DefaultComponents() []string { return []string{"brig", "galley", "cargohold"} }

// HTTP server limits of the ingress.
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 5 * time.Second
	// IdleTimeout closes keep-alive connections idle for that long.
	IdleTimeout = 90 * time.Second
	// MaxHeaderBytes bounds the size of a request's headers.
	MaxHeaderBytes = 64 << 10
	// writeSlack is how much longer than the request deadline a response
	// may take to be written.
	writeSlack = 5 * time.Second
)

// Config is the ingress binary's configuration: the variables of the
// contract (section 5) that every binary reads, plus the ingress's own.
type Config struct {
	config.Common
	// Addr is the listen address, FED_INGRESS_ADDR.
	Addr string `env:"FED_INGRESS_ADDR, default=:8443" desc:"ingress listen address (host:port)"`
	// MaxBodyBytes is the largest request body accepted, FED_MAX_BODY_BYTES.
	MaxBodyBytes int64 `env:"FED_MAX_BODY_BYTES, default=1048576" desc:"largest request body the ingress accepts, in bytes"`
}

// Validate reports every problem of the configuration at once (joined with
// errors.Join): those of config.Common.Validate, which also normalises the
// domains, and those of the ingress's own fields.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Common.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := checkAddr(c.Addr); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_BODY_BYTES must be positive, got %d", c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// checkAddr checks FED_INGRESS_ADDR: host:port with a numeric port.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("FED_INGRESS_ADDR %q is not host:port: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("FED_INGRESS_ADDR %q: port is not a number 0-65535", addr)
	}
	return nil
}
