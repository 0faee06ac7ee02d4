package vendorhook_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/vendorhook"
)

// TestEmulatorWebhooksAccepted drives batches through the emulator's HTTP
// API (via batchapi, i.e. openai-go) and lets the emulator's own webhook
// sender deliver to the Receiver: its signatures verify, the first attempt
// of each event fails on purpose and the emulator's redelivery (same
// webhook-id) triggers again and is then remembered.
func TestEmulatorWebhooksAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	var mu sync.Mutex
	seen := map[string]int{}
	h.tr.answer(func(_ context.Context, batchID string) error {
		mu.Lock()
		defer mu.Unlock()
		seen[batchID]++
		if seen[batchID] == 1 {
			return context.DeadlineExceeded // the first poll of each batch "times out"
		}
		return nil
	})

	emu := emulator.New(emulator.Config{
		APIKey:         "sk-test",
		ValidatingFor:  20 * time.Millisecond,
		InProgressFor:  100 * time.Millisecond,
		FinalizingFor:  20 * time.Millisecond,
		CancelDelay:    20 * time.Millisecond,
		TickInterval:   10 * time.Millisecond,
		WebhookURL:     h.srv.URL + vendorhook.Path,
		WebhookSecret:  testSecret,
		WebhookBackoff: 20 * time.Millisecond,
	})
	es := httptest.NewServer(emu)
	t.Cleanup(func() {
		es.Close()
		emu.Close()
	})
	vendor := batchapi.New(batchapi.Config{APIKey: "sk-test", BaseURL: es.URL + "/v1", HTTPClient: es.Client()})

	ctx := context.Background()
	line := []byte(`{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n")
	create := func() string {
		fileID, err := vendor.Upload(ctx, "input.jsonl", line)
		require.NoError(t, err)
		b, err := vendor.Create(ctx, batchapi.CreateParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
		require.NoError(t, err)
		return b.ID
	}
	completed := create()
	cancelled := create()
	_, err := vendor.Cancel(ctx, cancelled)
	require.NoError(t, err)

	// Each batch: one failed attempt (500), one redelivery that succeeds.
	got := fleettest.ReadN(t, h.tr.calls, 4, 10*time.Second)
	slices.Sort(got)
	want := []string{completed, completed, cancelled, cancelled}
	slices.Sort(want)
	require.Equal(t, want, got)

	// The trigger returned; the receiver marks the id processed right after.
	fleettest.WaitFor(t, 5*time.Second, func() bool {
		keys, err := h.rdb.Keys(ctx, vendorhook.KeyPrefix+"*").Result()
		if err != nil || len(keys) != 2 { // one webhook-id per event
			return false
		}
		for _, k := range keys {
			if v, err := h.rdb.Get(ctx, k).Result(); err != nil || v != "1" {
				return false
			}
		}
		return true
	}, "both webhook-ids marked processed")
	for _, b := range emu.Batches() {
		if b.ID == completed {
			require.Equal(t, "completed", b.Status)
		}
		if b.ID == cancelled {
			require.Equal(t, "cancelled", b.Status)
		}
	}
}
