// Package bench is the load generator behind cmd/fedbench. It measures, in
// one process and one run, the throughput, latency, allocations and CPU
// time per request of fedbus against its baselines, each answering with
// the same echo:
//
//   - nats: raw NATS request-reply (embedded server, nats.go Request,
//     a plain subscriber that responds);
//   - bus: bus.Client.Call and bus.Serve over the same kind of NATS;
//   - go-mtls: an HTTP/2 client with a client certificate to a Go HTTPS
//     server that requires one (TLS 1.3);
//   - nginx: the same client to nginx (a child process) terminating mutual
//     TLS with HTTP/2 and proxying to a Go echo over HTTP/1.1 keep-alive
//     connections (skipped when nginx is not installed);
//   - ingress: the same client, presenting backend A's certificate, to
//     backend B's ingress, which authenticates A and asks the echo
//     component over NATS;
//   - federated: the whole round trip, component A → NATS A → federator A
//     → mutual TLS → ingress B → NATS B → component B and back.
//
// A run keeps N requests in flight (each worker sends its next request
// when the previous one is answered) for a warm-up and a measuring window
// per cell, and reports the requests completed in the window per second,
// their p50/p90/p99 latency, errors, and, per request, the process's heap
// allocations (runtime.MemStats) and CPU time (getrusage; nginx's CPU from
// /proc separately).
//
// RunDomains is the memory mode: a federator process calls 10,000 distinct
// remote domains once each and reports its resident set size.
package bench
