package cli

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/spf13/cobra"
)

type dashboardFlags struct {
	readOnly bool
	actions  bool
	refresh  time.Duration
}

type uiServer struct{}

func (s *uiServer) serve(net.Listener) error { return nil }
func (s *uiServer) close()                   {}

func (e *env) dashboard(context.Context, dashboardFlags) (*uiServer, error) {
	return nil, errors.New("wip")
}

func (e *env) uiCmd() *cobra.Command { return &cobra.Command{Use: "ui"} }
