package emulator

import (
	"crypto/rand"
	"encoding/hex"
)

// randID returns 2n random hex characters. Object IDs come from crypto/rand,
// not the seeded source, so they never repeat across emulator restarts.
func randID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newFileID() string     { return "file-" + randID(11) }
func newBatchID() string    { return "batch_" + randID(16) }
func newBatchReqID() string { return "batch_req_" + randID(16) }
func newEventID() string    { return "evt_" + randID(16) }
func newWebhookID() string  { return "wh_" + randID(16) }
