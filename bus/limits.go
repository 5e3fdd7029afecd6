package bus

import (
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/contract"
)

// HeaderRoom is the part of the server's max payload kept for a message's
// headers when a body limit is derived from it (BodyLimit). fedbus's own
// headers (the CloudEvents attributes, the origin domain, the
// object-store headers) take well under 2 KiB.
const HeaderRoom = 8 << 10

// BodyLimit returns the largest body a fedbus message on nc can carry:
// the max payload of the server nc is connected to (payload and headers
// together, 1 MiB on a stock server) less HeaderRoom, and 0 when nc does
// not know the server's limit (not connected).
func BodyLimit(nc *nats.Conn) int64 {
	limit := nc.MaxPayload()
	if limit <= HeaderRoom {
		return 0
	}
	return limit - HeaderRoom
}

// ClampBody returns configured, or BodyLimit(nc) when that is smaller (and
// known): a body limit that the NATS server can carry. clamped reports
// whether it changed.
func ClampBody(nc *nats.Conn, configured int64) (limit int64, clamped bool) {
	if bl := BodyLimit(nc); bl > 0 && bl < configured {
		return bl, true
	}
	return configured, false
}

// MessageSize returns the bytes msg takes against the server's max
// payload: its data and its encoded headers.
func MessageSize(msg *nats.Msg) int {
	n := len(msg.Data)
	if len(msg.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range msg.Header {
			for _, v := range vs {
				n += len(k) + len(": ") + len(v) + len("\r\n")
			}
		}
	}
	return n
}

// tooLarge reports whether msg is larger than what the server of nc
// carries, with the server's limit.
func tooLarge(nc *nats.Conn, msg *nats.Msg) (bool, int64) {
	limit := nc.MaxPayload()
	return limit > 0 && int64(MessageSize(msg)) > limit, limit
}

// PublishError maps the failure to publish a message of size bytes on
// subject to the contract: a message larger than the server's max payload
// is payload-too-large, anything else (a closed or draining connection, a
// full reconnect buffer) component-unavailable.
func PublishError(subject string, size int, err error) *contract.Error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return contract.Errorf(contract.LabelPayloadTooLarge, "the message of %d bytes on %s is larger than the NATS server carries (max_payload)", size, subject)
	}
	return contract.Errorf(contract.LabelComponentUnavailable, "publishing on %s failed: %v", subject, err)
}
