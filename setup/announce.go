package setup

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/version"
)

// Announce makes this process answer NATS service discovery as
// contract.ServiceName, with its role, domain, bucket and components in
// the metadata: fedctl reads them to warn when no running service watches
// the bucket it writes, and to know the federated components
// (`nats micro info fedbus` shows them too). The caller stops the service
// before it closes the connection.
func Announce(nc *nats.Conn, role string, c *config.Common) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        contract.ServiceName,
		Version:     version.Semver(),
		Description: "fedbus " + role + " of " + c.Domain,
		Metadata: map[string]string{
			contract.MetaRole:       role,
			contract.MetaDomain:     c.Domain,
			contract.MetaBucket:     c.KVBucket,
			contract.MetaComponents: strings.Join(c.Components, ","),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("announce on NATS service discovery: %w", err)
	}
	// The server refuses a subscription after it was made: flush so that
	// a refusal (NATS permissions without $SRV) is known now.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("announce on NATS service discovery: %w", err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		_ = svc.Stop()
		return nil, fmt.Errorf("announce on NATS service discovery (its user needs subscribe $SRV.*, $SRV.*.%s, $SRV.*.%s.* and publish _INBOX_fedctl.srv.>, deploy/nats/fedbus.conf): %w",
			contract.ServiceName, contract.ServiceName, err)
	}
	return svc, nil
}
