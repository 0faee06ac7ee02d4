package fleettest

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOption adjusts the embedded server's options before it starts, for
// example to set limits: func(o *server.Options) { o.MaxPayload = 1 << 20 }.
type NATSOption func(*server.Options)

// NATS is an embedded nats-server with JetStream enabled, listening on
// 127.0.0.1 on a port of its own and storing streams in a t.TempDir().
type NATS struct {
	// Server is the running server. Restart replaces it, so do not read it
	// concurrently with Restart.
	Server *server.Server

	mu   sync.Mutex
	opts *server.Options // template for restarts, with the port fixed
	url  string
}

// StartNATS starts an embedded JetStream server on a free port with its
// store in t.TempDir() and logging off, and shuts it down in t.Cleanup.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	o := &server.Options{
		ServerName: "fleettest",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		// No HTTP monitoring, clustering or leafnodes: nothing else listens.
		HTTPPort: 0,
	}
	for _, opt := range opts {
		opt(o)
	}
	n := &NATS{opts: o}
	s := n.start(t)
	port := s.Addr().(*net.TCPAddr).Port
	n.opts.Port = port // restarts reuse the port, so clients can reconnect
	scheme := "nats://"
	if o.TLSConfig != nil {
		scheme = "tls://"
	}
	n.url = scheme + net.JoinHostPort(o.Host, strconv.Itoa(port))
	t.Cleanup(n.Shutdown)
	return n
}

func (n *NATS) start(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(n.opts.Clone())
	if err != nil {
		t.Fatalf("StartNATS: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatalf("StartNATS: server not ready for connections within 10s")
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatalf("StartNATS: JetStream not enabled")
	}
	n.mu.Lock()
	n.Server = s
	n.mu.Unlock()
	return s
}

// URL is the client URL, nats://127.0.0.1:PORT (tls:// with NATSTLS). It
// stays the same across Restart.
func (n *NATS) URL() string { return n.url }

// Shutdown stops the server and waits for it to finish. It is idempotent.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	s := n.Server
	n.mu.Unlock()
	if s == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart shuts the server down and starts a new one on the same port and
// store directory, so streams and consumers persisted by JetStream survive.
// Clients from Connect reconnect on their own.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	n.start(t)
}

// Connect opens a client connection to url with a JetStream context and
// closes it in t.Cleanup. It reconnects quickly and forever, which suits
// Restart; opts are applied after those defaults.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	all := append([]nats.Option{
		nats.Name("fleettest"),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.MaxReconnects(-1),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		t.Fatalf("Connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("Connect %s: jetstream: %v", url, err)
	}
	return nc, js
}
