// Package fedtest runs whole fedbus backends in one process, for tests,
// benchmarks and the demo: an embedded NATS server, federators and an
// ingress on 127.0.0.1, registered in an in-process DNS server
// (test/testbed), with certificates of a throwaway CA. It is test
// scaffolding: the production binaries never link it (setup assembles
// them).
package fedtest
