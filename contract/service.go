package contract

// ServiceName is the name under which every fedbus federator and ingress
// answers NATS service discovery (the $SRV.PING, $SRV.INFO and $SRV.STATS
// subjects of the NATS micro protocol; `nats micro info fedbus` lists
// them). fedctl asks it which bucket the running services watch and which
// components they federate. A fedbus addition, not part of CONTRACT.md.
const ServiceName = "fedbus"

// Metadata keys of a fedbus service's discovery answer.
const (
	// MetaRole is "federator" or "ingress".
	MetaRole = "role"
	// MetaDomain is the backend's domain (FED_DOMAIN).
	MetaDomain = "domain"
	// MetaBucket is the bucket of the dynamic federation config the
	// service watches (FED_KV_BUCKET; empty: none).
	MetaBucket = "kv_bucket"
	// MetaComponents is FED_COMPONENTS, comma-separated.
	MetaComponents = "components"
)
