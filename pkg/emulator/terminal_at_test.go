package emulator

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBatchInfoTerminalAt checks the admin view reports the exact instant a
// batch turned terminal (sub-second, unlike the Batch object's unix
// seconds), and nothing before it.
func TestBatchInfoTerminalAt(t *testing.T) {
	t.Parallel()
	e, clock := timeline(t)
	t0 := clock.Now().Add(123456789 * time.Nanosecond) // a sub-second creation time
	clock.Set(t0)
	fileID := addFile(e, lines(2, "r")...)
	done := createBatch(t, e, fileID).ID
	cancelled := createBatch(t, e, fileID).ID

	info := func(id string) BatchInfo {
		t.Helper()
		for _, b := range e.Batches() {
			if b.ID == id {
				return b
			}
		}
		t.Fatalf("batch %s not listed", id)
		return BatchInfo{}
	}
	clock.Set(t0.Add(20 * time.Second))
	serve(t, e, http.MethodPost, "/v1/batches/"+cancelled+"/cancel", "")
	// Completes at created + validating 10s + in progress 100s + finalizing 10s.
	clock.Set(t0.Add(120*time.Second - 1))
	require.Equal(t, StatusFinalizing, info(done).Status)
	require.True(t, info(done).TerminalAt.IsZero(), "not terminal yet")
	require.Equal(t, t0.Add(25*time.Second), info(cancelled).TerminalAt, "cancelled after CancelDelay 5s")

	clock.Set(t0.Add(time.Hour))
	require.Equal(t, StatusCompleted, info(done).Status)
	require.Equal(t, t0.Add(120*time.Second), info(done).TerminalAt)

	// The admin API carries it as RFC3339Nano, omitted while not terminal.
	running := createBatch(t, e, fileID).ID
	code, body := serve(t, e, http.MethodGet, "/_emulator/batches", "")
	require.Equal(t, http.StatusOK, code)
	var list struct {
		Data []map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &list))
	got := map[string]any{}
	for _, b := range list.Data {
		got[b["id"].(string)] = b["terminal_at"]
	}
	require.Equal(t, t0.Add(120*time.Second).Format(time.RFC3339Nano), got[done])
	_, present := got[running]
	require.True(t, present)
	require.Nil(t, got[running], "no terminal_at while running")
}
