package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves an [Emulator] on a TCP address. Its methods follow the
// fleet's lifecycle convention: Start returns once listening, Stop is
// graceful until ctx ends, then hard, and both Stop and Close are
// idempotent and safe if never started.
type Server struct {
	addr string
	emu  *Emulator

	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// NewServer returns a server for cfg on addr (host:port; port 0 picks a
// free port, see [Server.BaseURL]). It panics like [New] on invalid cfg.
func NewServer(addr string, cfg Config) *Server {
	return &Server{addr: addr, emu: New(cfg)}
}

// Emulator is the served emulator, for its Go admin API.
func (s *Server) Emulator() *Emulator { return s.emu }

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("emulator: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.emu, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan error, 1)
	go func() { s.done <- s.srv.Serve(ln) }()
	return nil
}

// URL is the server's root, e.g. "http://127.0.0.1:41234"; empty before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// BaseURL is the OpenAI base URL, URL()+"/v1", for option.WithBaseURL.
func (s *Server) BaseURL() string {
	if u := s.URL(); u != "" {
		return u + "/v1"
	}
	return ""
}

// AnthropicBaseURL is the Anthropic base URL, URL() itself (anthropic-sdk-go
// adds /v1/messages/...), for option.WithBaseURL or ANTHROPIC_BASE_URL.
func (s *Server) AnthropicBaseURL() string { return s.URL() }

// Stop shuts the HTTP server down gracefully, closing connections still
// busy when ctx ends, then closes the emulator.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	var err error
	if srv != nil {
		if err = srv.Shutdown(ctx); err != nil {
			err = errors.Join(err, srv.Close())
		}
		if serveErr := <-done; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
			err = errors.Join(err, serveErr)
		}
		done <- http.ErrServerClosed // let a second Stop pass
	}
	s.emu.Close()
	return err
}

// Close is Stop with a 5s grace period.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Stop(ctx)
}
