package contract

// CloudEvents sources (ce-source) of the contract's messages.

// ComponentSource is the source of a local component's requests and
// replies: /<component>, e.g. /brig.
func ComponentSource(component string) string { return "/" + component }

// OriginSource is the source the ingress gives an inbound request or
// notification: //<origin-domain>/<component> (section 3).
func OriginSource(origin, component string) string { return "//" + origin + "/" + component }

// ServiceSource is the source of a fedbus service's own messages (replies,
// status events): //<domain>/<service>, e.g. //a.example.com/federator.
func ServiceSource(domain, service string) string { return "//" + domain + "/" + service }
