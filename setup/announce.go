package setup

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/version"
)

// Announce makes this process answer NATS service discovery as
// contract.ServiceName, with its role, domain, bucket and components in
// the metadata, and its serve loops as endpoints with their counts: fedctl
// reads the metadata to warn when no running service watches the bucket it
// writes and to know the federated components, `fedctl check` counts the
// instances of each role, `fedctl remotes status` reads the federators'
// per-remote records, and `nats micro ls`, `info fedbus` and `stats
// fedbus` show every instance with its requests and errors. The caller
// stops it before it closes the connection.
func Announce(nc *nats.Conn, role string, c *config.Common, endpoints []bus.ServiceEndpoint) (*bus.Announcement, error) {
	ann, err := bus.Announce(nc, bus.ServiceConfig{
		Name:        contract.ServiceName,
		Version:     version.Semver(),
		Description: "fedbus " + role + " of " + c.Domain,
		Metadata: map[string]string{
			contract.MetaRole:       role,
			contract.MetaDomain:     c.Domain,
			contract.MetaBucket:     c.KVBucket,
			contract.MetaComponents: strings.Join(c.Components, ","),
		},
		Endpoints: endpoints,
	})
	if err != nil {
		return nil, fmt.Errorf("announce on NATS service discovery: %w", err)
	}
	// The server refuses a subscription after it was made: flush so that
	// a refusal (NATS permissions without $SRV) is known now.
	if err := nc.Flush(); err != nil {
		_ = ann.Stop()
		return nil, fmt.Errorf("announce on NATS service discovery: %w", err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		_ = ann.Stop()
		return nil, fmt.Errorf("announce on NATS service discovery (its user needs subscribe $SRV.*, $SRV.*.%s, $SRV.*.%s.* and publish _INBOX_fedctl.srv.>, deploy/nats/fedbus.conf): %w",
			contract.ServiceName, contract.ServiceName, err)
	}
	return ann, nil
}
