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

// Headers of the fedbus-to-fedbus extensions of section 6 (a remote that is
// not fedbus ignores them; see README "Notifications").
const (
	// HTTPNotificationSeq is the sender's sequence number of a notification
	// (its sequence in the sender's notification stream): increasing in
	// publish order per destination. The receiving ingress remembers the
	// highest it stored per origin and epoch, so that a notification sent
	// again after its duplicate window is still recognised.
	HTTPNotificationSeq = "Fedbus-Notification-Seq"
	// HTTPNotificationEpoch names the sequence space of the sender's
	// notifications to one destination: the creation time of its stream
	// (Unix nanoseconds) and the destination domain, e.g.
	// "1764590403123456789.b.example.com". Sequence numbers compare only
	// within one epoch.
	HTTPNotificationEpoch = "Fedbus-Notification-Epoch"
	// HTTPBatchMaxEntries and HTTPBatchMaxBytes are set by a fedbus
	// ingress on its answers to notifications: it accepts batches (POST
	// BatchPath) of up to that many notifications and body bytes. A sender
	// sends batches only to a remote that said so.
	HTTPBatchMaxEntries = "Fedbus-Batch-Max-Entries"
	HTTPBatchMaxBytes   = "Fedbus-Batch-Max-Bytes"
)

// Headers of a dead letter (a notification set aside, kept on fed.dead):
// the notification's own headers and body, plus why and when.
const (
	// HeaderDeadLabel is the contract label of the refusal, e.g.
	// federation-remote-error, unknown-component, notification-expired.
	HeaderDeadLabel = "Fedbus-Dead-Label"
	// HeaderDeadStatus is the HTTP status of the refusal (the remote's, or
	// the label's).
	HeaderDeadStatus = "Fedbus-Dead-Status"
	// HeaderDeadError is the contract error body (JSON, the remote's own
	// body under "inner").
	HeaderDeadError = "Fedbus-Dead-Error"
	// HeaderDeadSubject is the notification's subject.
	HeaderDeadSubject = "Fedbus-Dead-Subject"
	// HeaderDeadTime is when it was set aside (RFC 3339, UTC).
	HeaderDeadTime = "Fedbus-Dead-Time"
	// HeaderDeadPublished is when it was published (RFC 3339, UTC).
	HeaderDeadPublished = "Fedbus-Dead-Published"
	// HeaderDeadAttempts is how many delivery attempts it had.
	HeaderDeadAttempts = "Fedbus-Dead-Attempts"
)

// JetStream's own headers that fedbus reads (set by the server on
// republished messages and direct gets).
const (
	HeaderJSSubject   = "Nats-Subject"
	HeaderJSSequence  = "Nats-Sequence"
	HeaderJSTimeStamp = "Nats-Time-Stamp"
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
