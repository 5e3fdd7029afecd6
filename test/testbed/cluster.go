package testbed

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterOptions describe an embedded NATS cluster.
type ClusterOptions struct {
	// Name is the cluster's name (and its gateway's name in a
	// supercluster); servers are named <Name>-1 … <Name>-<Size>.
	Name string
	// Size is the number of servers, default 3.
	Size int
	// StoreDir, when set, enables JetStream on file storage: server i
	// keeps its store in StoreDir/<server name>.
	StoreDir string
	// LameDuckDuration and LameDuckGracePeriod set the servers' lame-duck
	// mode (nats-server's defaults, 2m and 10s, when zero).
	LameDuckDuration, LameDuckGracePeriod time.Duration
}

// node is one server of a cluster: what it was started with, so that it
// can be started again with the same name, ports and store.
type node struct {
	name                          string
	clientPort, routePort, gwPort int
	srv                           *server.Server // nil while stopped
}

// Cluster is a NATS cluster of embedded servers on 127.0.0.1: routes
// between every pair (random ports, fixed once chosen), JetStream on file
// storage when asked. A stopped server can be started again with its name,
// ports and store, and rejoins. Safe for concurrent use.
type Cluster struct {
	opts ClusterOptions
	// gateways are the other clusters of a supercluster, by name, with
	// their gateway URLs (set by StartSuperCluster).
	gateways map[string][]*url.URL

	mu    sync.Mutex
	nodes []*node
}

// StartCluster starts a cluster and waits until every route is up (and,
// with JetStream, until JetStream has a meta leader that every server
// follows). Shutdown stops it.
func StartCluster(opts ClusterOptions) (*Cluster, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := c.startAll(); err != nil {
		c.Shutdown()
		return nil, err
	}
	if err := c.WaitFormed(30 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

func newCluster(opts ClusterOptions) (*Cluster, error) {
	if opts.Name == "" {
		return nil, errors.New("start cluster: a name is needed")
	}
	if opts.Size == 0 {
		opts.Size = 3
	}
	c := &Cluster{opts: opts}
	// Route ports are chosen now: a clustered JetStream server does not
	// start without its routes configured.
	for i := range opts.Size {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("start cluster %s: %w", opts.Name, err)
		}
		c.nodes = append(c.nodes, &node{name: opts.Name + "-" + strconv.Itoa(i+1), routePort: port})
	}
	return c, nil
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startAll starts the servers one after the other.
func (c *Cluster) startAll() error {
	for i := range c.nodes {
		if err := c.Restart(i); err != nil {
			return err
		}
	}
	return nil
}

// options builds the server options of node i from what is known now.
// c.mu must be held.
func (c *Cluster) optionsLocked(i int) *server.Options {
	n := c.nodes[i]
	o := &server.Options{
		ServerName:          n.name,
		Host:                "127.0.0.1",
		Port:                orRandom(n.clientPort),
		NoLog:               true,
		NoSigs:              true,
		Cluster:             server.ClusterOpts{Name: c.opts.Name, Host: "127.0.0.1", Port: orRandom(n.routePort)},
		LameDuckDuration:    c.opts.LameDuckDuration,
		LameDuckGracePeriod: c.opts.LameDuckGracePeriod,
	}
	// A route to every other server.
	for j, other := range c.nodes {
		if j != i {
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats-route", Host: "127.0.0.1:" + strconv.Itoa(other.routePort)})
		}
	}
	if c.opts.StoreDir != "" {
		o.JetStream = true
		o.StoreDir = filepath.Join(c.opts.StoreDir, n.name)
	}
	if c.gateways != nil {
		o.Gateway = server.GatewayOpts{Name: c.opts.Name, Host: "127.0.0.1", Port: orRandom(n.gwPort)}
		for name, urls := range c.gateways {
			o.Gateway.Gateways = append(o.Gateway.Gateways, &server.RemoteGatewayOpts{Name: name, URLs: urls})
		}
	}
	return o
}

func orRandom(port int) int {
	if port == 0 {
		return -1
	}
	return port
}

// Restart starts server i (stopped by Kill, LameDuck or never started)
// with its name, ports, routes and store. It returns once the server takes
// connections; WaitFormed waits for the cluster.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.srv != nil {
		if n.srv.Running() {
			return fmt.Errorf("start %s: already running", n.name)
		}
		n.srv.WaitForShutdown()
		n.srv = nil
	}
	s, err := server.NewServer(c.optionsLocked(i))
	if err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("start %s: not ready after 10s", n.name)
	}
	n.srv = s
	n.clientPort = s.Addr().(*net.TCPAddr).Port
	n.routePort = s.ClusterAddr().Port
	if c.gateways != nil {
		n.gwPort = s.GatewayAddr().Port
	}
	return nil
}

// Kill stops server i at once (its clients see their connection drop).
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// LameDuck puts server i in lame-duck mode and returns when it has shut
// down: it stops taking connections, tells its clients, hands its
// JetStream leaderships over, and after the grace period closes its
// clients one by one over the lame-duck duration (ClusterOptions).
func (c *Cluster) LameDuck(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.mu.Unlock()
	if s != nil {
		s.LameDuckShutdown()
		s.WaitForShutdown()
	}
}

// Server returns server i (nil while it is stopped).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.nodes[i].srv; s != nil && s.Running() {
		return s
	}
	return nil
}

// Size is the number of servers.
func (c *Cluster) Size() int { return len(c.nodes) }

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.opts.Name }

// URL returns the client URL of server i (the same after a restart).
func (c *Cluster) URL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return "nats://127.0.0.1:" + strconv.Itoa(c.nodes[i].clientPort)
}

// URLs returns the client URLs of every server, starting with server
// first (then the ones after it, wrapping around): a process given this
// list, unrandomized, connects to server first and fails over in order.
func (c *Cluster) URLs(first int) []string {
	urls := make([]string, 0, len(c.nodes))
	for k := range c.nodes {
		urls = append(urls, c.URL((first+k)%len(c.nodes)))
	}
	return urls
}

// WaitFormed waits until every running server has a route to every other
// running server and, with JetStream, a meta leader is known to all.
func (c *Cluster) WaitFormed(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.formed()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s not formed after %v: %w", c.opts.Name, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) formed() error {
	var running []*server.Server
	for i := range c.nodes {
		if s := c.Server(i); s != nil {
			running = append(running, s)
		}
	}
	leaders := 0
	for _, s := range running {
		if n := s.NumRemotes(); n != len(running)-1 {
			return fmt.Errorf("%s has routes to %d servers, want %d", s.Name(), n, len(running)-1)
		}
		if c.gateways != nil && s.NumOutboundGateways() != len(c.gateways) {
			return fmt.Errorf("%s has %d outbound gateways, want %d", s.Name(), s.NumOutboundGateways(), len(c.gateways))
		}
		if c.opts.StoreDir == "" {
			continue
		}
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("%s: JetStream not current", s.Name())
		}
		if s.JetStreamIsLeader() {
			leaders++
		}
	}
	if c.opts.StoreDir != "" && c.gateways == nil && leaders != 1 {
		return fmt.Errorf("%d JetStream meta leaders, want 1", leaders)
	}
	return nil
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { c.Kill(i) })
	}
	wg.Wait()
}

// SuperCluster is several clusters joined by gateways (the NATS
// "supercluster" of a multi-region deployment).
type SuperCluster struct {
	Clusters []*Cluster
}

// StartSuperCluster starts the clusters one after the other, each with a
// gateway to the ones before it (the earlier ones learn of the later ones
// when these connect), and waits until every gateway is up. Cluster names
// must differ.
func StartSuperCluster(opts ...ClusterOptions) (*SuperCluster, error) {
	sc := &SuperCluster{}
	for _, o := range opts {
		c, err := newCluster(o)
		if err != nil {
			sc.Shutdown()
			return nil, err
		}
		c.gateways = make(map[string][]*url.URL)
		for _, prev := range sc.Clusters {
			c.gateways[prev.opts.Name] = prev.gatewayURLs()
		}
		sc.Clusters = append(sc.Clusters, c)
		if err := c.startAll(); err != nil {
			sc.Shutdown()
			return nil, err
		}
	}
	// Every cluster now knows every other one's gateways (for restarts).
	for _, c := range sc.Clusters {
		c.mu.Lock()
		for _, other := range sc.Clusters {
			if other != c {
				c.gateways[other.opts.Name] = other.gatewayURLsLocked()
			}
		}
		c.mu.Unlock()
	}
	if err := sc.WaitFormed(30 * time.Second); err != nil {
		sc.Shutdown()
		return nil, err
	}
	return sc, nil
}

// gatewayURLs returns the gateway URLs of the cluster's servers.
func (c *Cluster) gatewayURLs() []*url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gatewayURLsLocked()
}

func (c *Cluster) gatewayURLsLocked() []*url.URL {
	var urls []*url.URL
	for _, n := range c.nodes {
		urls = append(urls, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(n.gwPort)})
	}
	return urls
}

// WaitFormed waits until every cluster is formed and gateways connect
// each to every other.
func (sc *SuperCluster) WaitFormed(timeout time.Duration) error {
	for _, c := range sc.Clusters {
		if err := c.WaitFormed(timeout); err != nil {
			return err
		}
	}
	return nil
}

// Shutdown stops every server of every cluster.
func (sc *SuperCluster) Shutdown() {
	for _, c := range sc.Clusters {
		c.Shutdown()
	}
}
