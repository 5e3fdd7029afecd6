// Package federator implements the outbound federator workers: they take
// components' requests from fed.out.> (queue group "federator"), check the
// federation strategy, discover the remote backend through DNS SRV, call its
// ingress over mutual TLS and reply on the request's inbox with the
// response or a contract error. Every request gets exactly one reply.
package federator
