package contract

// DefaultStatusBucket is the default of FED_STATUS_BUCKET: the JetStream
// key-value bucket where the federator workers keep each remote's up/down
// state, so that a change gives one remote status event (section 7).
const DefaultStatusBucket = "fedbus-status"
