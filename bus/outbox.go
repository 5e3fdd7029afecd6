package bus

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/nats-io/nats.go"
)

// outboxSize is how many messages an Outbox queues before Publish blocks.
const outboxSize = 4096

// Outbox publishes messages on a NATS connection from one goroutine, in
// batches.
//
// Why: nats.go buffers a publish and wakes its flusher goroutine, which
// writes the buffer to the socket. When each reply is published by its own
// handler goroutine, the Go scheduler runs the freshly woken flusher right
// after that goroutine (it takes the "run next" slot), so every reply costs
// one write system call, and one read in the NATS server. An Outbox lets the
// goroutines that are ready to run queue their messages first
// (runtime.Gosched), then publishes them all: one flush per batch. Under
// light load the batch is one message and nothing waits; measured with
// cmd/fedbench (see BENCHMARKS.md).
//
// A publish can fail (a message larger than the server's max payload, a
// closed connection, a full reconnect buffer). The Loop and the Requester
// hand their messages over with the one who waits for them, and that one
// gets a contract error at once (see failer); a message published with
// Publish has nobody waiting, and its failure is logged at WARN.
type Outbox struct {
	nc  *nats.Conn
	log *slog.Logger

	mu     sync.RWMutex // guards closed and the close of queue
	closed bool
	queue  chan outMsg
	done   chan struct{} // closed when the publishing goroutine returns
}

// failer is told, on the Outbox's goroutine, of a message it handed to an
// Outbox that could not be published, so that whoever waits for the
// message is answered at once instead of at its deadline.
type failer interface {
	publishFailed(msg *nats.Msg, requestID string, err error)
}

type outMsg struct {
	msg       *nats.Msg
	requestID string // for the log line of a failed publish
	owner     failer // nil: a failure is logged
}

// NewOutbox starts an Outbox on nc; logger receives the failures of
// messages nobody waits for (required). Close stops it.
func NewOutbox(nc *nats.Conn, logger *slog.Logger) (*Outbox, error) {
	if logger == nil {
		return nil, fmt.Errorf("new outbox: %w", ErrNoLogger)
	}
	o := &Outbox{nc: nc, log: logger, queue: make(chan outMsg, outboxSize), done: make(chan struct{})}
	go o.run()
	return o, nil
}

// Publish queues msg, a message nobody waits for; requestID names it in the
// WARN line written if publishing fails. It blocks while the queue is
// full. After Close it publishes msg directly.
func (o *Outbox) Publish(msg *nats.Msg, requestID string) {
	o.send(outMsg{msg: msg, requestID: requestID})
}

// send queues m (published directly after Close, so that a handler
// finishing late still gets its reply out).
func (o *Outbox) send(m outMsg) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		o.publish(m)
		return
	}
	o.queue <- m
	o.mu.RUnlock()
}

func (o *Outbox) run() {
	defer close(o.done)
	for m := range o.queue {
		// Let the goroutines that are ready to run (handlers about to
		// reply) queue their messages before this batch is published.
		runtime.Gosched()
		o.publish(m)
		for n := len(o.queue); n > 0; n-- {
			o.publish(<-o.queue)
		}
	}
}

// publish publishes m and hands a failure to its owner.
func (o *Outbox) publish(m outMsg) {
	err := o.nc.PublishMsg(m.msg)
	switch {
	case err == nil:
	case m.owner != nil:
		m.owner.publishFailed(m.msg, m.requestID, err)
	default:
		o.log.Warn("publish failed", "request_id", m.requestID, "subject", m.msg.Subject, "size", MessageSize(m.msg), "err", err)
	}
}

// Close publishes what is queued and stops the Outbox; later Publish calls
// publish directly. It is safe to call more than once.
func (o *Outbox) Close() {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.queue)
	}
	o.mu.Unlock()
	<-o.done
}
