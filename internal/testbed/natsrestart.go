package testbed

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

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
	opts := &server.Options{Host: "127.0.0.1", Port: addr.Port, NoLog: true, NoSigs: true}
	if dir != "" {
		opts.JetStream = true
		opts.StoreDir = dir
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("restart nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("restart nats: not ready after 10s")
	}
	return ns, nil
}
