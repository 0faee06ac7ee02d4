package contract

import "strings"

// Public subjects (see the README's "Wire contract").
const (
	// SubjectRequests receives batch requests from producers.
	SubjectRequests = "batch.requests"
	// SubjectCompleted carries exactly one final event per original key.
	SubjectCompleted = "batch.completed"
	// SubjectRetry carries one event per retry batch started.
	SubjectRetry = "batch.retry"
	// SubjectStatePrefix prefixes vendor status transitions: batch.state.<status>.
	SubjectStatePrefix = "batch.state."
	// SubjectProgress carries throttled progress within a status.
	SubjectProgress = "batch.progress"
	// SubjectCancel receives cancellation requests.
	SubjectCancel = "batch.cancel"
	// SubjectDLQRequests receives invalid batch.requests messages, as sent.
	SubjectDLQRequests = "batch.dlq.requests"
	// SubjectDLQWebhooks receives outbound webhook deliveries that ran out of attempts.
	SubjectDLQWebhooks = "batch.dlq.webhooks"
	// SubjectAudit carries one audit record per finished job.
	SubjectAudit = "batch.audit"
	// SubjectWarning carries soft and hard timeout warnings of active batches.
	SubjectWarning = "batch.warning"
)

// StateSubject is the subject of a transition into status.
func StateSubject(status string) string { return SubjectStatePrefix + status }

// Headers set on dead-lettered messages.
const (
	HeaderErrorCode = "Batch-Error-Code"
	HeaderError     = "Batch-Error"
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
)

// CompletedMsgID is the Nats-Msg-Id of the batch.completed event of key.
func CompletedMsgID(key string) string { return key + ":completed" }

// RetryMsgID is the Nats-Msg-Id of the batch.retry event of a retry key.
func RetryMsgID(retryKey string) string { return retryKey + ":retry" }

// StateMsgID is the Nats-Msg-Id of the transition of batchID into status.
func StateMsgID(batchID, status string) string { return batchID + ":" + status }

// retrySep separates an original key from its retry attempt number.
const retrySep = ":retry-"

// RetryKey is the idempotency key of the n-th retry batch (n >= 1) of key.
// It is deterministic, so creating a retry is itself idempotent.
func RetryKey(key string, n int) string {
	return key + retrySep + itoa(n)
}

// SplitRetryKey returns the original key and attempt number of a vendor
// idempotency key: ("k", 0) for an original key, ("k", 2) for "k:retry-2".
func SplitRetryKey(vendorKey string) (string, int) {
	i := strings.LastIndex(vendorKey, retrySep)
	if i < 0 {
		return vendorKey, 0
	}
	n, ok := atoi(vendorKey[i+len(retrySep):])
	if !ok || n < 1 {
		return vendorKey, 0
	}
	return vendorKey[:i], n
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
