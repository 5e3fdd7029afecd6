package contract

import "time"

// Defaults of the object store variables (section 5, for section 8).
const (
	// DefaultObjectBucket is the default of FED_OBJECT_BUCKET: the object
	// store bucket of large and streamed bodies.
	DefaultObjectBucket = "fedbus-objects"
	// DefaultObjectTTL is the default of FED_OBJECT_TTL: objects expire
	// after this time.
	DefaultObjectTTL = 10 * time.Minute
	// DefaultMaxObjectBytes is the default of FED_MAX_OBJECT_BYTES: the
	// largest streamed body.
	DefaultMaxObjectBytes = 100 << 20
)

// MinObjectTTL is the shortest FED_OBJECT_TTL: JetStream refuses a shorter
// maximum age for the stream that holds a bucket.
const MinObjectTTL = 100 * time.Millisecond

// maxObjectName bounds the object names fedbus accepts in a reference.
const maxObjectName = 255

// ValidBucket reports whether s is a valid object store or key-value bucket
// name: [A-Za-z0-9_-]+ (JetStream's rule).
func ValidBucket(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// ValidObjectName reports whether s can name an object in a reference
// (Fedbus-Object-Name): 1 to 255 bytes of printable ASCII, no space (the
// name travels in a NATS header and in log lines).
func ValidObjectName(s string) bool {
	if s == "" || len(s) > maxObjectName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
