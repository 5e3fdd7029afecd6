package bus

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Moving off a server in lame-duck mode.
//
// A NATS server in lame-duck mode (before an upgrade or a restart) stops
// taking connections, tells its clients, and after a grace period closes
// them one by one. A client whose connection is closed reconnects to
// another server of the cluster, but what was in flight on the closed
// connection is lost: replies to its requests, messages for its
// subscriptions, its own publishes written as the server closed. So a
// connection made by Connect does not wait to be closed: when its server
// announces lame-duck mode, the users of the connection that registered
// (Loop, Requester) bring what is in flight to an end, the connection
// moves to another server, and they resume:
//
//   - a Loop drains its queue subscription (the cluster gives new requests
//     to the other members of the group; the ones already delivered are
//     handled and their replies are published, buffered by nats.go while
//     the connection moves) and subscribes again afterwards;
//   - a Requester holds new requests and waits for the replies of those in
//     flight, then sends the held ones once the connection has moved.
//
// Nothing is lost when every queue group has members on other servers
// (two federators on different servers, two instances of a component):
// the requests that arrive meanwhile go to them. A Loop that is the only
// member of its group leaves a gap as short as the move itself.

// quiesceTimeout bounds how long the users of a connection take to bring
// what is in flight to an end (nats-server's lame-duck grace period is 10 s
// by default); moveTimeout bounds the reconnection.
const (
	quiesceTimeout = 8 * time.Second
	moveTimeout    = 10 * time.Second
)

// mover is a user of a connection that takes part in a move.
type mover interface {
	// quiesce returns once nothing of the user is in flight on the
	// connection, or ctx ended.
	quiesce(ctx context.Context)
	// resume is called once the connection is on another server (or the
	// move gave up).
	resume()
}

// movers are the registered users of each connection.
var movers = struct {
	sync.Mutex
	byConn map[*nats.Conn][]mover
}{byConn: make(map[*nats.Conn][]mover)}

// register adds m to the users of nc that move with it; the returned
// function removes it.
func register(nc *nats.Conn, m mover) (unregister func()) {
	movers.Lock()
	movers.byConn[nc] = append(movers.byConn[nc], m)
	movers.Unlock()
	return func() {
		movers.Lock()
		defer movers.Unlock()
		list := movers.byConn[nc]
		for i, x := range list {
			if x == m {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(movers.byConn, nc)
		} else {
			movers.byConn[nc] = list
		}
	}
}

// moveOffLameDuck moves nc off its server, which announced lame-duck mode.
func moveOffLameDuck(nc *nats.Conn, log *slog.Logger) {
	from := nc.ConnectedServerName()
	movers.Lock()
	users := append([]mover(nil), movers.byConn[nc]...)
	movers.Unlock()
	start := time.Now()
	log.Info("nats server entering lame-duck mode: moving to another server", "server", from, "users", len(users))
	ctx, cancel := context.WithTimeout(context.Background(), quiesceTimeout)
	var wg sync.WaitGroup
	for _, m := range users {
		wg.Go(func() { m.quiesce(ctx) })
	}
	wg.Wait()
	timedOut := ctx.Err() != nil
	cancel()
	if timedOut {
		log.Warn("lame-duck move: requests still in flight, moving anyway", "server", from, "waited", quiesceTimeout.String())
	}
	defer func() {
		for _, m := range users {
			m.resume()
		}
	}()
	if err := nc.ForceReconnect(); err != nil {
		log.Warn("lame-duck move: reconnect", "server", from, "err", err)
		return
	}
	deadline := time.Now().Add(moveTimeout)
	for !nc.IsConnected() || nc.ConnectedServerName() == from {
		if nc.IsClosed() || time.Now().After(deadline) {
			log.Warn("lame-duck move: not connected to another server", "server", from, "after", moveTimeout.String())
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Info("moved off the lame-duck server", "from", from, "to", nc.ConnectedServerName(), "took", time.Since(start).String())
}
