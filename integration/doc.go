// Package integration holds fedbus's container tests (build tag
// integration, run by `make integration`): the images fedbus:dev and
// fedbus-nats:dev run with testcontainers-go, on host networking, as two
// backends (a.example.com with three federators, b.example.com with one),
// their ingresses, stand-in brigs and devdns; the tests inject faults
// (SIGKILL and SIGTERM to a federator, the remote ingress stopped, the NATS
// servers restarted) under load and check what callers get. Each fault
// prints a SUMMARY line: requests sent, replies, failures by label.
package integration
