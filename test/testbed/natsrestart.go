package testbed

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
)

// RestartNATS shuts s down (as a crash would end it: clients are cut off)
// and starts a new server on the same port with the same JetStream store
// directory, with the server's default limits; clients reconnect to it.
// The returned server replaces s.
func RestartNATS(s *server.Server) (*server.Server, error) {
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("restart nats: no TCP address")
	}
	dir := s.StoreDir()
	if filepath.Base(dir) == "jetstream" { // the server adds it to the configured directory
		dir = filepath.Dir(dir)
	}
	s.Shutdown()
	s.WaitForShutdown()
	ns, err := startNATS(addr.Port, dir)
	if err != nil {
		return nil, fmt.Errorf("restart nats: %w", err)
	}
	return ns, nil
}
