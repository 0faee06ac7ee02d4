package webhook

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event types of outbound webhooks (contract "Outbound webhooks").
const (
	TypeBatchCompleted = "batch.completed"
	TypeBatchRetry     = "batch.retry"
)

// Envelope is the body of an outbound webhook:
// {"type": "batch.completed" | "batch.retry", "timestamp": RFC 3339, "data": <the event>}.
type Envelope struct {
	Type      string
	Timestamp time.Time
	Data      json.RawMessage
}

type wireEnvelope struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// MarshalJSON writes the envelope with its timestamp as RFC 3339 in UTC,
// to the second. A nil Data is written as null.
func (e Envelope) MarshalJSON() ([]byte, error) {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return json.Marshal(wireEnvelope{Type: e.Type, Timestamp: e.Timestamp.UTC().Format(time.RFC3339), Data: data})
}

// UnmarshalJSON reads an envelope; timestamp must be RFC 3339.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	var w wireEnvelope
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	ts, err := time.Parse(time.RFC3339, w.Timestamp)
	if err != nil {
		return fmt.Errorf("parse envelope timestamp: %w", err)
	}
	*e = Envelope{Type: w.Type, Timestamp: ts, Data: w.Data}
	return nil
}

// NewEnvelope marshals event as the data of an envelope of type typ.
func NewEnvelope(typ string, ts time.Time, event any) (Envelope, error) {
	data, err := json.Marshal(event)
	if err != nil {
		return Envelope{}, fmt.Errorf("marshal %s event: %w", typ, err)
	}
	return Envelope{Type: typ, Timestamp: ts, Data: data}, nil
}
