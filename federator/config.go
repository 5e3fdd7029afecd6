package federator

import (
	"errors"
	"fmt"
	"time"

	"github.com/fedbus/fedbus/config"
)

// Config is the federator binary's configuration: the contract's variables
// plus the worker's own tuning.
type Config struct {
	config.Common
	MaxInFlight      int           `env:"FED_MAX_IN_FLIGHT, default=2048" desc:"requests one federator worker handles at once"`
	MaxPerRemote     int           `env:"FED_MAX_IN_FLIGHT_PER_REMOTE, default=512" desc:"requests in flight to one remote domain; more get too-many-requests at once, so one slow remote cannot take every worker (0: no limit)"`
	IdleConnTimeout  time.Duration `env:"FED_IDLE_CONN_TIMEOUT, default=90s" desc:"idle connections to remote backends are closed after this time"`
	MaxResponseBytes int64         `env:"FED_MAX_RESPONSE_BYTES, default=16777216" desc:"largest remote response body accepted"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Common.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxInFlight <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_IN_FLIGHT must be positive"))
	}
	if c.MaxPerRemote < 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_IN_FLIGHT_PER_REMOTE must not be negative"))
	}
	if c.IdleConnTimeout <= 0 {
		errs = append(errs, fmt.Errorf("FED_IDLE_CONN_TIMEOUT must be positive"))
	}
	if c.MaxResponseBytes <= 0 {
		errs = append(errs, fmt.Errorf("FED_MAX_RESPONSE_BYTES must be positive"))
	}
	return errors.Join(errs...)
}
