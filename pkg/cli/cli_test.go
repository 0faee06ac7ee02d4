package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/ops"
)

func TestLongFlagsKeepEarlierSingleDashFlags(t *testing.T) {
	root := New(&bytes.Buffer{}, &bytes.Buffer{})
	got := LongFlags(root, []string{"publish", "-key", "k", "-wait", "-timeout=5m", "-o", "json", "-nats", "nats://x", "-x", "--", "-key"})
	require.Equal(t, []string{"publish", "--key", "k", "--wait", "--timeout=5m", "-o", "json", "--nats", "nats://x", "-x", "--", "-key"}, got)
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2026-12-01T00:00:00Z": time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := ops.ParseSince(in, now)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: %s", in, got)
	}
	for _, bad := range []string{"yesterday", "-1h", "1.5d", "d"} {
		_, err := ops.ParseSince(bad, now)
		require.Error(t, err, bad)
	}
}

func TestBadInputIsAClearErrorAndExitStatus1(t *testing.T) {
	for _, args := range [][]string{
		{"jobs", "ls", "--status", "running"},
		{"jobs", "ls", "--outcome", "partial", "--status", "active"},
		{"jobs", "ls", "-o", "yaml"},
		{"jobs", "show"},
		{"report", "--since", "soon"},
		{"nonsense"},
	} {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), append(args, "--nats", "nats://127.0.0.1:1"), &out, &errOut)
		require.Equal(t, 1, code, "%v", args)
		require.True(t, strings.HasPrefix(errOut.String(), "batchfleet: "), "%v: %q", args, errOut.String())
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut.String()), "\n")+1, "one line: %q", errOut.String())
	}
}
