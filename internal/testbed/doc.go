// Package testbed provides in-process infrastructure (DNS, CA, NATS) for tests and the demo.
package testbed
