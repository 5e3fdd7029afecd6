package federator

import (
	"errors"
	"fmt"
	"time"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
)

// Config is the federator binary's configuration: the contract's variables
// plus the worker's own tuning. Start from NewConfig, which holds the
// defaults.
type Config struct {
	config.Common
	MaxInFlight      int           `env:"FED_MAX_IN_FLIGHT" desc:"requests one federator worker handles at once"`
	MaxPerRemote     int           `env:"FED_MAX_IN_FLIGHT_PER_REMOTE" desc:"requests in flight to one remote domain; more get too-many-requests at once, so one slow remote cannot take every worker (0: no limit)"`
	IdleConnTimeout  time.Duration `env:"FED_IDLE_CONN_TIMEOUT" desc:"idle connections to remote backends are closed after this time"`
	MaxRemoteConns   int           `env:"FED_MAX_REMOTE_CONNS" desc:"connections to remote backends kept open at most: opening one more closes the least recently used idle ones (busy ones stay; 0: no limit)"`
	MaxResponseBytes int64         `env:"FED_MAX_RESPONSE_BYTES" desc:"largest remote response body passed on inline; lowered at start to what one NATS message carries (the server's max_payload less room for headers); a larger one goes through the object store (FED_OBJECT_BUCKET)"`
	AllowSelfCalls   bool          `env:"FED_ALLOW_SELF_CALLS" desc:"allow requests whose target is this backend's own domain (FED_DOMAIN); refused with federation-denied by default"`
	StatusBucket     string        `env:"FED_STATUS_BUCKET" desc:"JetStream key-value bucket of the remotes' up/down state, shared by the workers so that each change gives one remote status event (created when missing; empty: no status events)"`
	RemoteDownAfter  int           `env:"FED_REMOTE_DOWN_AFTER" desc:"unreachable failures in a row (connection refused, TLS, discovery, timeout) after which a worker judges a remote down"`
	// Notify configures the delivery of notifications (section 6).
	Notify NotifyConfig
}

// NewConfig returns the federator's configuration with every default: the
// one place they are written.
func NewConfig() Config {
	return Config{
		Common:           config.DefaultCommon(),
		MaxInFlight:      2048,
		MaxPerRemote:     512,
		IdleConnTimeout:  90 * time.Second,
		MaxRemoteConns:   512,
		MaxResponseBytes: 16 << 20,
		StatusBucket:     contract.DefaultStatusBucket,
		RemoteDownAfter:  3,
		Notify:           defaultNotifyConfig(),
	}
}

// Validate reports every problem at once; it changes nothing.
func (c *Config) Validate() error {
	return errors.Join(c.Common.Validate(), c.validateWorker())
}

// validateWorker checks the worker's own fields.
func (c *Config) validateWorker() error {
	var errs []error
	if c.MaxInFlight <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_IN_FLIGHT must be positive"))
	}
	if c.MaxPerRemote < 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_IN_FLIGHT_PER_REMOTE must not be negative"))
	}
	if c.IdleConnTimeout <= 0 {
		errs = append(errs, fmt.Errorf("FED_IDLE_CONN_TIMEOUT must be positive"))
	}
	if c.MaxRemoteConns < 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_REMOTE_CONNS must not be negative"))
	}
	if c.MaxResponseBytes <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_RESPONSE_BYTES must be positive"))
	}
	if c.RemoteDownAfter <= 0 {
		errs = append(errs, fmt.Errorf("FED_REMOTE_DOWN_AFTER must be positive"))
	}
	if c.StatusBucket != "" && !contract.ValidBucket(c.StatusBucket) {
		errs = append(errs, fmt.Errorf("FED_STATUS_BUCKET %q is not [A-Za-z0-9_-]+", c.StatusBucket))
	}
	errs = append(errs, c.Notify.validate())
	return errors.Join(errs...)
}
