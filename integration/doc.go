// Package integration holds fedbus's container tests (build tag
// integration, run by `make integration`): the images fedbus:dev and
// fedbus-nats:dev run with testcontainers-go, on host networking, as two
// backends (a.example.com on a three-server NATS cluster with JetStream and
// three federators, b.example.com on one server with one federator),
// their ingresses, stand-in brigs and devdns; the tests inject faults
// (SIGKILL and SIGTERM to a federator, the remote ingress stopped, a NATS
// server killed and one in lame-duck mode, every NATS server restarted)
// under load and check what callers get. Each fault prints a SUMMARY line:
// requests sent, replies, failures by label.
package integration
