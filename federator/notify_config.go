package federator

import (
	"errors"
	"fmt"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// NotifyConfig is the configuration of the notification delivery (contract
// section 6). Its defaults are in defaultNotifyConfig, called by NewConfig.
type NotifyConfig struct {
	Stream     string        `env:"FED_NOTIFY_STREAM" desc:"JetStream stream of outbound notifications (fed.notify.>), created when missing; its key-value buckets <name>_STATE and <name>_LEASES too"`
	MaxBytes   int64         `env:"FED_NOTIFY_MAX_BYTES" desc:"bytes the notification stream may hold when the federator creates it; a full stream refuses new notifications and evicts none (0: the server's limit)"`
	Duplicates time.Duration `env:"FED_NOTIFY_DUPLICATE_WINDOW" desc:"how long a notification id (Nats-Msg-Id) is remembered: publishing the same id again within it stores nothing new"`

	DeadStream   string        `env:"FED_NOTIFY_DEAD_STREAM" desc:"JetStream stream of dead letters (fed.dead.>), created when missing"`
	DeadMaxAge   time.Duration `env:"FED_NOTIFY_DEAD_MAX_AGE" desc:"how long dead letters are kept (0: forever)"`
	DeadMaxBytes int64         `env:"FED_NOTIFY_DEAD_MAX_BYTES" desc:"bytes of dead letters kept; the oldest go first (0: the server's limit)"`

	Batch      int   `env:"FED_NOTIFY_BATCH" desc:"notifications sent in one request to a fedbus remote that accepts batches, and fetched at once (1: one per request)"`
	BatchBytes int64 `env:"FED_NOTIFY_BATCH_BYTES" desc:"largest body of one batch request"`

	RetryMin time.Duration `env:"FED_NOTIFY_RETRY_MIN" desc:"wait after a destination's first failed attempt; it doubles with each failure (jittered)"`
	RetryMax time.Duration `env:"FED_NOTIFY_RETRY_MAX" desc:"longest wait between two attempts of a failing destination (retried without end)"`

	MaxAge     time.Duration `env:"FED_NOTIFY_MAX_AGE" desc:"notifications older than this when they could be sent become dead letters (notification-expired); 0: kept however long the remote stays away"`
	MaxBacklog int64         `env:"FED_NOTIFY_MAX_BACKLOG" desc:"notifications one destination may have waiting; the oldest beyond become dead letters (backlog-limit); 0: no limit"`

	Concurrency  int           `env:"FED_NOTIFY_CONCURRENCY" desc:"destinations one federator process delivers at once"`
	LeaseTTL     time.Duration `env:"FED_NOTIFY_LEASE_TTL" desc:"a destination's lease expires this long after its worker was last heard of; another worker then takes over"`
	ScanInterval time.Duration `env:"FED_NOTIFY_SCAN_INTERVAL" desc:"how often the stream is scanned for destinations with a backlog (the safety net of the wake-up messages)"`
}

// defaultNotifyConfig returns the defaults of NotifyConfig.
func defaultNotifyConfig() NotifyConfig {
	return NotifyConfig{
		Stream:       contract.DefaultNotifyStream,
		MaxBytes:     1 << 30,
		Duplicates:   2 * time.Minute,
		DeadStream:   contract.DefaultDeadStream,
		DeadMaxAge:   30 * 24 * time.Hour,
		DeadMaxBytes: 256 << 20,
		Batch:        500,
		BatchBytes:   1 << 20,
		RetryMin:     time.Second,
		RetryMax:     5 * time.Minute,
		Concurrency:  64,
		LeaseTTL:     30 * time.Second,
		ScanInterval: 30 * time.Second,
	}
}

// validate reports every problem of the notification settings.
func (c *NotifyConfig) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for name, v := range map[string]string{"FED_NOTIFY_STREAM": c.Stream, "FED_NOTIFY_DEAD_STREAM": c.DeadStream} {
		if !notify.ValidName(v) {
			add("%s %q is not [A-Za-z0-9_-]{1,128}", name, v)
		}
	}
	if c.Stream != "" && c.Stream == c.DeadStream {
		add("FED_NOTIFY_STREAM and FED_NOTIFY_DEAD_STREAM must differ")
	}
	if c.MaxBytes < 0 || c.DeadMaxBytes < 0 || c.MaxBacklog < 0 {
		add("FED_NOTIFY_MAX_BYTES, FED_NOTIFY_DEAD_MAX_BYTES and FED_NOTIFY_MAX_BACKLOG must not be negative")
	}
	if c.Duplicates <= 0 {
		add("FED_NOTIFY_DUPLICATE_WINDOW must be positive")
	}
	if c.DeadMaxAge < 0 || c.MaxAge < 0 {
		add("FED_NOTIFY_DEAD_MAX_AGE and FED_NOTIFY_MAX_AGE must not be negative")
	}
	if c.Batch < 1 || c.Batch > 10000 {
		add("FED_NOTIFY_BATCH must be 1 to 10000")
	}
	if c.BatchBytes < 1024 {
		add("FED_NOTIFY_BATCH_BYTES must be at least 1024")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		add("FED_NOTIFY_RETRY_MIN must be positive and FED_NOTIFY_RETRY_MAX at least as long")
	}
	if c.Concurrency < 1 {
		add("FED_NOTIFY_CONCURRENCY must be positive")
	}
	if c.LeaseTTL < 2*time.Second {
		add("FED_NOTIFY_LEASE_TTL must be at least 2s")
	}
	if c.ScanInterval <= 0 {
		add("FED_NOTIFY_SCAN_INTERVAL must be positive")
	}
	return errors.Join(errs...)
}
