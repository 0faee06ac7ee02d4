package vendorhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Serve listens on addr (VENDOR_WEBHOOK_ADDR) and serves [Receiver.Handler]
// until ctx is done. Then it stops accepting, lets requests in flight finish
// for up to ShutdownTimeout, cancels the rest and returns. A done ctx is no
// error; failing to listen or a shutdown that had to cancel requests is.
func (r *Receiver) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen VENDOR_WEBHOOK_ADDR %s: %w", addr, err)
	}
	// Requests run under base, not ctx: a shutdown lets them finish first,
	// and aborts them only once ShutdownTimeout has passed.
	base, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r.log.Info().Str("addr", ln.Addr().String()).Str("path", Path).Msg("serving vendor webhooks")

	select {
	case err := <-served:
		return fmt.Errorf("serve vendor webhooks: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	if err = srv.Shutdown(sctx); err != nil {
		abort() // cancel the Triggers still running
		err = errors.Join(fmt.Errorf("shut down vendor webhooks: %w", err), srv.Close())
	}
	<-served // http.ErrServerClosed
	return err
}
