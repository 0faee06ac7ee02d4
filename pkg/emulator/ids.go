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

// anthropicID returns prefix, "01" and 22 random base62 characters, the
// shape of Anthropic's IDs (msgbatch_013Zva2CMHLNnXjNJJKqJ2EF).
func anthropicID(prefix string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 22)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return prefix + "01" + string(b)
}

func newMsgBatchID() string { return anthropicID("msgbatch_") }
func newMessageID() string  { return anthropicID("msg_") }
func newRequestID() string  { return anthropicID("req_") }
