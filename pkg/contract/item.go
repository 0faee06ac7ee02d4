package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"

	"github.com/tidwall/gjson"
)

// Single requests (contract v1.1, "Single requests"): producers publish one
// request per message; the fleet packs them into vendor batches and answers
// each with one batch.item.completed.
const (
	// SubjectItems receives single requests from producers.
	SubjectItems = "batch.items"
	// SubjectItemCompleted carries exactly one final event per item
	// custom_id (Nats-Msg-Id ItemCompletedMsgID).
	SubjectItemCompleted = "batch.item.completed"
	// SubjectDLQItems receives invalid batch.items messages, as sent.
	SubjectDLQItems = "batch.dlq.items"
	// PackKeyPrefix prefixes the idempotency keys of the jobs the fleet
	// packs items into.
	PackKeyPrefix = "pack-"
)

// ItemCompletedMsgID is the Nats-Msg-Id of an item's batch.item.completed.
func ItemCompletedMsgID(customID string) string { return customID + ":item" }

// itemIDRE is the custom_id rule of items: 1..64 of [A-Za-z0-9_-] (it is
// the item's idempotency key, and valid as a vendor custom_id of both
// providers).
var itemIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidItemID reports whether id is a valid item custom_id.
func ValidItemID(id string) bool { return itemIDRE.MatchString(id) }

// Item is one batch.items message.
type Item struct {
	// CustomID is required and unique across all items: the item's
	// idempotency key.
	CustomID string `json:"custom_id"`
	// Provider is ProviderOpenAI (the default) or ProviderAnthropic.
	Provider string `json:"provider,omitempty"`
	// Endpoint defaults per provider (DefaultEndpoint, AnthropicEndpoint).
	Endpoint string `json:"endpoint,omitempty"`
	// Body is the request body, an object with "model".
	Body json.RawMessage `json:"body"`
	// Metadata is echoed back on batch.item.completed ({} when none).
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Model is the body's model ("" if it has none).
func (it *Item) Model() string {
	m := gjson.GetBytes(it.Body, "model")
	if m.Type != gjson.String {
		return ""
	}
	return m.Str
}

// DecodeItem parses and validates a batch.items message, applying
// defaults. A non-nil error is always a *Error; the returned custom_id is
// the message's when it meets the custom_id rule (even if another field is
// invalid), so the caller can answer under it, and "" otherwise.
func DecodeItem(data []byte) (Item, string, error) {
	var it Item
	if len(bytes.TrimSpace(data)) == 0 {
		return it, "", Errorf(CodeInvalidJSON, "message is empty")
	}
	if t := bytes.TrimSpace(data); t[0] != '{' || !gjson.ValidBytes(t) {
		var v map[string]json.RawMessage
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("not an object")
		}
		return it, "", Errorf(CodeInvalidJSON, "message is not a JSON object: %v", err)
	}
	var id string
	if f := gjson.GetBytes(data, "custom_id"); f.Type == gjson.String && ValidItemID(f.Str) {
		id = f.Str
	}
	if err := strictUnmarshal(data, &it); err != nil {
		return it, id, Errorf(CodeInvalidField, "%v", err)
	}
	if err := it.Validate(); err != nil {
		return it, id, err
	}
	return it, id, nil
}

// Validate applies defaults and checks every rule of an item; it returns
// a *Error naming the first rule broken.
func (it *Item) Validate() error {
	switch {
	case it.CustomID == "":
		return Errorf(CodeInvalidInput, "custom_id is required")
	case !ValidItemID(it.CustomID):
		return Errorf(CodeInvalidInput, "custom_id %q must be 1..64 characters of [A-Za-z0-9_-]", it.CustomID)
	}
	switch it.Provider {
	case "":
		it.Provider = ProviderOpenAI
	case ProviderOpenAI, ProviderAnthropic:
	default:
		return Errorf(CodeInvalidField, "provider %q is not one of %s, %s", it.Provider, ProviderOpenAI, ProviderAnthropic)
	}
	if it.Endpoint == "" {
		it.Endpoint = DefaultEndpoint
		if it.Provider == ProviderAnthropic {
			it.Endpoint = AnthropicEndpoint
		}
	}
	switch {
	case it.Provider == ProviderAnthropic && it.Endpoint != AnthropicEndpoint:
		return Errorf(CodeInvalidEndpoint, "endpoint %q: an anthropic item's endpoint is %s", it.Endpoint, AnthropicEndpoint)
	case it.Provider == ProviderOpenAI && !isEndpoint(it.Endpoint):
		return Errorf(CodeInvalidEndpoint, "endpoint %q is not one of %s", it.Endpoint, strings.Join(Endpoints, ", "))
	}
	body := bytes.TrimSpace(it.Body)
	if len(body) == 0 || body[0] != '{' {
		return Errorf(CodeInvalidInput, "body must be a JSON object")
	}
	if it.Model() == "" {
		return Errorf(CodeInvalidInput, "body.model is required")
	}
	return validateMetadata(it.Metadata)
}

// ItemResponse is a succeeded item's vendor response.
type ItemResponse struct {
	StatusCode int             `json:"status_code"`
	Body       json.RawMessage `json:"body"`
}

// ItemCompleted is the batch.item.completed event: exactly one per item
// custom_id.
type ItemCompleted struct {
	CustomID string `json:"custom_id"`
	// Outcome is OutcomeSucceeded, OutcomeFailed, OutcomeExpired or
	// OutcomeCancelled.
	Outcome string `json:"outcome"`
	// Response is set when the item succeeded; Error otherwise.
	Response *ItemResponse `json:"response,omitempty"`
	Error    *Error        `json:"error,omitempty"`
	// JobKey is the pack's job key and BatchID the vendor batch that ran
	// the item ("" for an item refused at intake).
	JobKey   string            `json:"job_key"`
	BatchID  string            `json:"batch_id"`
	Metadata map[string]string `json:"metadata"`
	Usage    *Usage            `json:"usage,omitempty"`
}
