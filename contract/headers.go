package contract

// NATS message headers: CloudEvents binary content mode (sections 1 and 3).
const (
	HeaderSpecVersion     = "ce-specversion"
	HeaderID              = "ce-id"
	HeaderSource          = "ce-source"
	HeaderType            = "ce-type"
	HeaderDataContentType = "ce-datacontenttype"
	HeaderTraceParent     = "ce-traceparent"
	// HeaderOriginDomain is the extension the ingress sets: the verified
	// origin domain of an inbound request.
	HeaderOriginDomain = "ce-origindomain"
	// HeaderTimeoutMs is a fedbus extension: how many milliseconds the
	// caller still waits. The federator and components use it to bound
	// their own work; it is optional.
	HeaderTimeoutMs = "ce-timeoutms"
	// HeaderContentType is the NATS header that marks structured mode.
	HeaderContentType = "content-type"
	// HeaderMsgID is JetStream's deduplication id (section 6): equal to the
	// ce-id on fed.notify, <origin-domain>/<ce-id> on fed.inbox.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderStatus and StatusNoResponders: the status line of the message
	// the NATS server sends to a request's reply subject when nothing
	// subscribes to its subject (nats.go reads it as the "Status" header).
	HeaderStatus       = "Status"
	StatusNoResponders = "503"
)

// Object store headers (section 8) of a fedbus.response whose body is an
// object of the JetStream object store instead of the message's payload.
const (
	HeaderObjectBucket = "Fedbus-Object-Bucket"
	HeaderObjectName   = "Fedbus-Object-Name"
	HeaderObjectSize   = "Fedbus-Object-Size"
)

// HTTP headers between backends (section 2).
const (
	HTTPOriginDomain = "Wire-Origin-Domain"
	// HTTPOriginDomainOld is the seed document's name of the origin
	// header; the ingress accepts either, and both present must agree.
	HTTPOriginDomainOld = "Wire-Domain"
	HTTPRequestID       = "Request-Id"
	HTTPRequestTimeout  = "Request-Timeout-Ms"
	HTTPTraceParent     = "traceparent"
	HTTPContentType     = "Content-Type"
	HTTPRetryAfter      = "Retry-After" // on a 429: seconds or an HTTP-date
	HTTPDate            = "Date"
	// HTTPNotificationID marks a request as the delivery of a notification
	// (section 6); its value is the notification's ce-id.
	HTTPNotificationID = "Fedbus-Notification-Id"
)

// CloudEvents attribute values.
const (
	SpecVersion       = "1.0"
	TypeRequest       = "fedbus.request"
	TypeResponse      = "fedbus.response"
	TypeError         = "fedbus.error"
	TypeNotification  = "fedbus.notification"
	TypeRemoteDown    = "fedbus.remote.down"
	TypeRemoteUp      = "fedbus.remote.up"
	ContentTypeJSON   = "application/json"
	ContentTypeCEJSON = "application/cloudevents+json"
	// ContentTypeOctetStream is the content type of raw bodies such as
	// cargohold's stream-asset (section 8).
	ContentTypeOctetStream = "application/octet-stream"
)

// Queue groups: federator workers share fed.out.> in FederatorQueueGroup; a
// component's instances share fed.in.<component>.> in the queue group named
// after the component.
const FederatorQueueGroup = "federator"

// Object store extensions (section 8) of a structured-mode fedbus.response:
// the Fedbus-Object-* headers as CloudEvents extension attributes (whose
// names are lower-case letters and digits only). fedbus writes the headers
// as well, in both modes.
const (
	ExtObjectBucket = "fedbusobjectbucket"
	ExtObjectName   = "fedbusobjectname"
	ExtObjectSize   = "fedbusobjectsize"
)
