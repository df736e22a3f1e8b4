// Package natstest starts embedded NATS servers with JetStream for tests.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running embedded server.
type Server struct {
	*server.Server
	Dir string
}

// URL returns the server's client URL.
func (s *Server) URL() string { return s.ClientURL() }

// Start starts a JetStream server on a random loopback port with its files
// in a temporary folder. It is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn starts a server with its JetStream files in dir, so that a test
// can stop it and start it again on the same data.
func StartIn(t testing.TB, dir string) *Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		t.Fatal("embedded nats did not become ready")
	}
	s := &Server{Server: ns, Dir: dir}
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits until it has. It may be called more than once.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect returns a connection and a JetStream handle, closed when the test ends.
func Connect(t testing.TB, s *Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
