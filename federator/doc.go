// Package federator implements the outbound federator workers: they take
// components' requests from fed.out.> (queue group "federator"), check the
// federation strategy, discover the remote backend through DNS SRV, call its
// ingress over mutual TLS and reply on the request's inbox with the
// response or a contract error. Every request gets exactly one reply.
//
// With FED_REQUIRE_DNSSEC, a remote whose SRV answer is not
// DNSSEC-validated gets nothing (discovery-failure). A remote that answers
// 429 gets nothing from this worker until its Retry-After (1s when
// absent, at most 60s) has elapsed: its requests fail at once with
// too-many-requests.
//
// With JetStream (Deps.JetStream), the federator also delivers the
// notifications of contract section 6 (notify.go describes how): it
// creates their streams and buckets at start, takes each destination's
// lease in turn, sends its backlog in order (in batches to a fedbus remote
// that takes them), retries without end with backoff, and sets aside as
// dead letters the notifications refused for good.
package federator
