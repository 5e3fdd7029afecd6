// Package natsperm holds the tests of the example NATS server configuration
// deploy/nats/fedbus.conf: they run a real NATS server from that file and
// check, user by user, that every path fedbus needs works and that the
// paths an intruder would want (reading another component's requests or
// replies, posing as the ingress, writing the federation config) are
// refused. It has no code of its own.
package natsperm
