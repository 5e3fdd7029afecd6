// Package setup is the production wiring of the fedbus binaries: Open
// builds the services a federator or an ingress process shares (NATS
// connection, DNS resolver, federation policy and its dynamic
// configuration, TLS material) from the configuration, and Run is the
// whole life of a binary (read the configuration, start, wait for a
// signal, shut down gracefully), so that cmd/federator and cmd/ingress
// stay a few lines each. Test scaffolding lives elsewhere
// (test/fedtest); the binaries never link it.
package setup
