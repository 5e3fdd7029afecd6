package contract

// Federation strategies (FED_STRATEGY, section 5).
const (
	AllowNone = "allow-none"
	AllowAll  = "allow-all"
	AllowList = "allow-list"
)

// ValidStrategy reports whether s is one of the three strategies.
func ValidStrategy(s string) bool { return s == AllowNone || s == AllowAll || s == AllowList }

// DefaultComponents returns the default of FED_COMPONENTS: the components
// federated in both directions.
func DefaultComponents() []string { return []string{"brig", "galley", "cargohold"} }

// Default names of the JetStream streams of section 6 (FED_NOTIFY_STREAM,
// FED_INBOX_STREAM, FED_NOTIFY_DEAD_STREAM): the federator and the ingress
// create them when missing; components and fedctl find them by these
// names unless configured otherwise.
const (
	DefaultNotifyStream = "FEDBUS_NOTIFY"
	DefaultInboxStream  = "FEDBUS_INBOX"
	DefaultDeadStream   = "FEDBUS_DEAD"
)

// InboxConsumerGroup is the priority group of the components' inbox
// consumers (a fedbus choice): the instances of one component pull in it
// with the pinned policy, so that one instance at a time takes its
// notifications and their order per origin holds.
const InboxConsumerGroup = "fedbus"
