// Package testbed provides in-process infrastructure (DNS, CA, NATS, a
// settable clock) for tests and the demo.
package testbed
