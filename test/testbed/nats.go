package testbed

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartNATS starts an embedded NATS server on 127.0.0.1 with a random port
// (JetStream enabled when storeDir is not empty) and the server's default
// limits: a message carries at most 1 MiB (max_payload), as on a stock
// server, so that tests see what production sees. Shut it down with
// Shutdown and WaitForShutdown.
func StartNATS(storeDir string) (*server.Server, error) {
	s, err := startNATS(-1, storeDir)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	return s, nil
}

// startNATS starts an embedded NATS server on 127.0.0.1:port (-1: a
// random port), with JetStream on storeDir when it is not empty.
func startNATS(port int, storeDir string) (*server.Server, error) {
	opts := &server.Options{
		Host:   "127.0.0.1",
		Port:   port,
		NoLog:  true,
		NoSigs: true,
	}
	if storeDir != "" {
		opts.JetStream = true
		opts.StoreDir = storeDir
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("not ready after 10s")
	}
	return s, nil
}
