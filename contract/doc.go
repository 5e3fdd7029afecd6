// Package contract is the fedbus contract (CONTRACT.md, version 2) as code:
// everything the two peers of a federated call, the components and remote
// backends must agree on, in one place a reviewer can hold against the
// document. It depends on the standard library only (and
// golang.org/x/net/idna, the Go project's IDNA tables, which the standard
// library itself vendors), so that every other package can use it.
//
//   - tokens: ValidComponent, ValidRPC, NormalizeDomain, ValidRequestID
//     (section "Tokens");
//   - subjects: Subjects builds and parses fed.out, fed.in, fed.notify,
//     fed.inbox and fed.status subjects (sections 1, 3, 6 and 7); no other
//     package builds a subject;
//   - header names and CloudEvents attribute values (sections 1 to 3, 6
//     and 8): headers.go;
//   - the HTTP path /federation/<component>/<rpc>: Path builds it,
//     ParsePath parses it (sections 2 and 3);
//   - ce-source forms: ComponentSource, OriginSource, ServiceSource;
//   - the error labels and statuses of section 4, and Error, the one typed
//     federation error (matched with errors.Is by label);
//   - the configuration values both sides read (section 5): strategy
//     names, the default components and subject prefix, the object store
//     defaults and the rules of bucket and object names (section 8).
package contract
