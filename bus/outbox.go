package bus

import (
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
type Outbox struct {
	nc  *nats.Conn
	log *slog.Logger

	mu     sync.RWMutex // guards closed and the close of queue
	closed bool
	queue  chan outMsg
	done   chan struct{} // closed when the publishing goroutine returns
}

type outMsg struct {
	msg       *nats.Msg
	requestID string // for the log line of a failed publish
}

// NewOutbox starts an Outbox on nc. Close stops it.
func NewOutbox(nc *nats.Conn, logger *slog.Logger) *Outbox {
	if logger == nil {
		logger = slog.Default()
	}
	o := &Outbox{nc: nc, log: logger, queue: make(chan outMsg, outboxSize), done: make(chan struct{})}
	go o.run()
	return o
}

// Publish queues msg (a reply or a request with its reply subject set);
// requestID names it in the log line written if publishing fails. It blocks
// while the queue is full. After Close it publishes msg directly, so that a
// handler finishing late still gets its reply out.
func (o *Outbox) Publish(msg *nats.Msg, requestID string) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		o.publish(outMsg{msg, requestID})
		return
	}
	o.queue <- outMsg{msg, requestID}
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

func (o *Outbox) publish(m outMsg) {
	if err := o.nc.PublishMsg(m.msg); err != nil {
		o.log.Warn("publish failed", "request_id", m.requestID, "subject", m.msg.Subject, "err", err)
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
