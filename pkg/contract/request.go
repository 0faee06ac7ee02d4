package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Endpoints the vendor accepts for a batch; the first is the default.
var Endpoints = []string{"/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses"}

// Defaults applied by Decode.
const (
	DefaultEndpoint         = "/v1/chat/completions"
	DefaultCompletionWindow = "24h"
	MaxKeyLen               = 128
	MaxMetadataPairs        = 14
	MaxRequests             = 50000
	MaxMetadataKeyLen       = 64
	MaxMetadataValueLen     = 512
	// MaxObjectNameLen bounds input_object names.
	MaxObjectNameLen = 1024
)

// BucketIntake is the JetStream object store bucket producers put large
// batch inputs in (contract v1.1, "Large inputs"); input_object names an
// object there.
const BucketIntake = "batch_intake"

// Reserved metadata keys: the fleet sets them on every vendor batch.
const (
	MetaIdempotencyKey = "idempotency_key"
	MetaRetryOf        = "retry_of"
)

var keyRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Request is a batch request on batch.requests.
type Request struct {
	IdempotencyKey   string            `json:"idempotency_key"`
	Endpoint         string            `json:"endpoint,omitempty"`
	CompletionWindow string            `json:"completion_window,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Requests         []RequestItem     `json:"requests,omitempty"`
	InputFileID      string            `json:"input_file_id,omitempty"`
	// InputObject names an OpenAI batch JSONL file in the JetStream object
	// store bucket batch_intake (contract v1.1, "Large inputs"): the way to
	// send a job larger than one NATS message.
	InputObject string `json:"input_object,omitempty"`
	// Provider is the vendor (contract v1.1, "Providers"): ProviderOpenAI
	// (the default) or ProviderAnthropic.
	Provider string `json:"provider,omitempty"`
}

// Providers (contract v1.1).
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	// AnthropicEndpoint is the only (and default) endpoint of Anthropic jobs.
	AnthropicEndpoint = "/v1/messages"
	// MaxAnthropicRequests bounds an Anthropic job's requests.
	MaxAnthropicRequests = 100000
)

// anthropicIDRE is Anthropic's custom_id rule.
var anthropicIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ValidAnthropicCustomID reports whether id matches Anthropic's custom_id
// rule, ^[a-zA-Z0-9_-]{1,64}$.
func ValidAnthropicCustomID(id string) bool { return anthropicIDRE.MatchString(id) }

// RequestItem is one sub-request; method POST and url = endpoint are implied.
type RequestItem struct {
	CustomID string          `json:"custom_id"`
	Body     json.RawMessage `json:"body"`
}

// ValidKey reports whether key meets the idempotency key rules:
// 1..128 characters of [A-Za-z0-9._:-], not ending in a retry suffix
// (":retry-<n>", reserved for the fleet's retry batches).
func ValidKey(key string) bool {
	if !keyRE.MatchString(key) {
		return false
	}
	_, n := SplitRetryKey(key)
	return n == 0
}

// Decode parses and validates a batch.requests message, applying defaults.
// A non-nil error is always a *Error with a Code from this package; the
// returned key is the message's idempotency key when it meets the key rules
// (even if another field is invalid), so the caller can report the failure
// under it, and "" otherwise.
func Decode(data []byte) (Request, string, error) {
	var req Request
	if len(bytes.TrimSpace(data)) == 0 {
		return req, "", Errorf(CodeInvalidJSON, "message is empty")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return req, "", Errorf(CodeInvalidJSON, "message is not a JSON object: %v", err)
	}
	key := validKeyOf(raw)
	if err := strictUnmarshal(data, &req); err != nil {
		return req, key, Errorf(CodeInvalidField, "%v", err)
	}
	if err := req.Validate(); err != nil {
		return req, key, err
	}
	return req, key, nil
}

func validKeyOf(raw map[string]json.RawMessage) string {
	var k string
	if json.Unmarshal(raw["idempotency_key"], &k) == nil && ValidKey(k) {
		return k
	}
	return ""
}

// strictUnmarshal decodes one JSON object; unknown fields are tolerated so a
// producer on a newer contract version is not rejected.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("decode request: trailing data after the JSON object")
	}
	return nil
}

// Validate applies defaults and checks every rule of the contract; it
// returns a *Error naming the first rule broken.
func (r *Request) Validate() error {
	if r.IdempotencyKey == "" {
		return Errorf(CodeMissingKey, "idempotency_key is required")
	}
	if !keyRE.MatchString(r.IdempotencyKey) {
		return Errorf(CodeInvalidKey, "idempotency_key must be 1..%d characters of [A-Za-z0-9._:-]", MaxKeyLen)
	}
	if _, n := SplitRetryKey(r.IdempotencyKey); n > 0 {
		return Errorf(CodeInvalidKey, "idempotency_key must not end in %q<n>: that suffix is reserved for retry batches", retrySep)
	}
	switch r.Provider {
	case "":
		r.Provider = ProviderOpenAI
	case ProviderOpenAI, ProviderAnthropic:
	default:
		return Errorf(CodeInvalidField, "provider %q is not one of %s, %s", r.Provider, ProviderOpenAI, ProviderAnthropic)
	}
	if r.Provider == ProviderAnthropic {
		if r.Endpoint == "" {
			r.Endpoint = AnthropicEndpoint
		}
		if r.Endpoint != AnthropicEndpoint {
			return Errorf(CodeInvalidEndpoint, "endpoint %q: an anthropic job's endpoint is %s", r.Endpoint, AnthropicEndpoint)
		}
		if r.InputFileID != "" {
			return Errorf(CodeInvalidInput, "input_file_id is an OpenAI file: give an anthropic job's requests inline or as input_object")
		}
	}
	if r.Endpoint == "" {
		r.Endpoint = DefaultEndpoint
	}
	if r.Provider == ProviderOpenAI && !isEndpoint(r.Endpoint) {
		return Errorf(CodeInvalidEndpoint, "endpoint %q is not one of %s", r.Endpoint, strings.Join(Endpoints, ", "))
	}
	if r.CompletionWindow == "" {
		r.CompletionWindow = DefaultCompletionWindow
	}
	if r.CompletionWindow != DefaultCompletionWindow {
		return Errorf(CodeInvalidField, "completion_window %q is not supported (only %q)", r.CompletionWindow, DefaultCompletionWindow)
	}
	if err := validateMetadata(r.Metadata); err != nil {
		return err
	}
	given := 0
	for _, ok := range []bool{r.Requests != nil, r.InputFileID != "", r.InputObject != ""} {
		if ok {
			given++
		}
	}
	switch {
	case given != 1:
		return Errorf(CodeInvalidInput, "give exactly one of requests, input_file_id and input_object")
	case r.InputObject != "":
		if len(r.InputObject) > MaxObjectNameLen {
			return Errorf(CodeInvalidInput, "input_object must be at most %d characters", MaxObjectNameLen)
		}
		return nil
	case r.InputFileID != "":
		return nil
	}
	return validateItems(r.Provider, r.Requests)
}

func isEndpoint(e string) bool {
	for _, x := range Endpoints {
		if e == x {
			return true
		}
	}
	return false
}

func validateMetadata(m map[string]string) error {
	if len(m) > MaxMetadataPairs {
		return Errorf(CodeInvalidMetadata, "metadata has %d pairs, at most %d are allowed", len(m), MaxMetadataPairs)
	}
	for k, v := range m {
		switch {
		case k == MetaIdempotencyKey || k == MetaRetryOf:
			return Errorf(CodeInvalidMetadata, "metadata key %q is reserved", k)
		case k == "" || len(k) > MaxMetadataKeyLen:
			return Errorf(CodeInvalidMetadata, "metadata key %q must be 1..%d characters", k, MaxMetadataKeyLen)
		case len(v) > MaxMetadataValueLen:
			return Errorf(CodeInvalidMetadata, "metadata value of %q is longer than %d characters", k, MaxMetadataValueLen)
		}
	}
	return nil
}

func validateItems(provider string, items []RequestItem) error {
	limit := MaxRequests
	if provider == ProviderAnthropic {
		limit = MaxAnthropicRequests
	}
	if len(items) == 0 {
		return Errorf(CodeInvalidInput, "requests must hold 1..%d items, got 0", limit)
	}
	if len(items) > limit {
		return Errorf(CodeInvalidInput, "requests must hold 1..%d items, got %d", limit, len(items))
	}
	seen := make(map[string]struct{}, len(items))
	for i, it := range items {
		if it.CustomID == "" {
			return Errorf(CodeInvalidInput, "requests[%d].custom_id is required", i)
		}
		if provider == ProviderAnthropic && !anthropicIDRE.MatchString(it.CustomID) {
			return Errorf(CodeInvalidInput, "requests[%d].custom_id %q: an anthropic custom_id is 1..64 characters of [a-zA-Z0-9_-]", i, it.CustomID)
		}
		if _, dup := seen[it.CustomID]; dup {
			return Errorf(CodeDuplicateCustomID, "requests[%d].custom_id %q is not unique", i, it.CustomID)
		}
		seen[it.CustomID] = struct{}{}
		b := bytes.TrimSpace(it.Body)
		if len(b) == 0 || b[0] != '{' {
			return Errorf(CodeInvalidInput, "requests[%d].body must be a JSON object", i)
		}
	}
	return nil
}

// inputLine is one line of the vendor's JSONL input file.
type inputLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// JSONL renders the requests as the vendor's batch input file: one line
// {"custom_id","method":"POST","url":endpoint,"body"} per request.
func (r *Request) JSONL() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, it := range r.Requests {
		if err := enc.Encode(inputLine{CustomID: it.CustomID, Method: "POST", URL: r.Endpoint, Body: it.Body}); err != nil {
			return nil, fmt.Errorf("encode request %q: %w", it.CustomID, err)
		}
	}
	return buf.Bytes(), nil
}
