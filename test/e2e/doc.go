// Package e2e holds the in-process end-to-end tests of fedbus: whole
// backends (embedded NATS, federator, ingress) talking through a real DNS
// server on loopback and real mutual TLS.
package e2e
