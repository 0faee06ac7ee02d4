package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxRequestsPerMessageBatch is Anthropic's limit of requests in one Message Batch.
const MaxRequestsPerMessageBatch = 100_000

// customIDPattern is the pattern a custom_id must match, as Anthropic
// states it in its error.
const customIDPattern = "^[a-zA-Z0-9_-]{1,64}$"

// parseMessageBatch validates the body of POST /v1/messages/batches as
// Anthropic does before it creates a batch: an object whose only member is
// requests, 1..100000 requests, each an object of a custom_id matching
// customIDPattern and unique in the batch, and params with model,
// max_tokens and messages. The first violation is returned as a 400
// invalid_request_error naming its field (requests.3.custom_id: ...).
// Like the OpenAI input parser it walks the body in place and keeps per
// request only what its execution reads.
func parseMessageBatch(body []byte) ([]msgRequest, *msgError) {
	if !json.Valid(body) {
		return nil, msgInvalid("The request body is not valid JSON.")
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, msgInvalid("The request body must be a JSON object.")
	}
	var list span
	extra := ""
	members(body, i, func(key []byte, v span) {
		if string(key) == "requests" {
			list = v
		} else if extra == "" {
			extra = string(key)
		}
	})
	switch {
	case extra != "":
		return nil, msgInvalid("%s: Extra inputs are not permitted", extra)
	case !list.ok():
		return nil, msgInvalid("requests: Field required")
	case body[list.start] != '[':
		return nil, msgInvalid("requests: Input should be a valid list")
	}
	n := 0
	elements(body, list.start, func(span) { n++ })
	if n == 0 || n > MaxRequestsPerMessageBatch {
		return nil, msgInvalid("requests: List should have between 1 and %d items, not %d", MaxRequestsPerMessageBatch, n)
	}
	p := msgParser{body: body, seen: make(map[string]struct{}, n), models: map[string]string{}}
	reqs := make([]msgRequest, 0, n)
	var bad *msgError
	elements(body, list.start, func(v span) {
		if bad != nil {
			return
		}
		var r msgRequest
		if r, bad = p.request(len(reqs), v); bad == nil {
			reqs = append(reqs, r)
		}
	})
	return reqs, bad
}

// msgParser holds what checking one request needs from the others.
type msgParser struct {
	body   []byte
	seen   map[string]struct{} // custom_ids so far
	models map[string]string   // one string per model name
}

// request checks requests[k], at v.
func (p *msgParser) request(k int, v span) (msgRequest, *msgError) {
	var r msgRequest
	field := func(name, format string, args ...any) *msgError {
		return msgInvalid("requests.%d%s: %s", k, name, fmt.Sprintf(format, args...))
	}
	if p.body[v.start] != '{' {
		return r, field("", "Input should be an object")
	}
	var customID, params span
	extra := ""
	members(p.body, v.start, func(key []byte, v span) {
		switch string(key) {
		case "custom_id":
			customID = v
		case "params":
			params = v
		default:
			if extra == "" {
				extra = string(key)
			}
		}
	})
	switch {
	case extra != "":
		return r, field("."+extra, "Extra inputs are not permitted")
	case !customID.ok():
		return r, field(".custom_id", "Field required")
	}
	id, ok := decodeString(p.body, customID)
	switch {
	case !ok:
		return r, field(".custom_id", "Input should be a valid string")
	case !validCustomID(id):
		return r, field(".custom_id", "String should match pattern '%s'", customIDPattern)
	}
	if _, dup := p.seen[id]; dup {
		return r, field(".custom_id", "Duplicate custom_id %q: each request in a Message Batch must have a unique custom_id", id)
	}
	p.seen[id] = struct{}{}
	r.customID = id
	if !params.ok() {
		return r, field(".params", "Field required")
	}
	if err := p.params(&r, params, field); err != nil {
		return r, err
	}
	return r, nil
}

// params checks the Messages API params at v and fills r from them: only
// model, max_tokens and messages are required and checked; the other
// members are accepted as they are.
func (p *msgParser) params(r *msgRequest, v span, field func(name, format string, args ...any) *msgError) *msgError {
	if p.body[v.start] != '{' {
		return field(".params", "Input should be an object")
	}
	var model, maxTokens, messages, system, metadata span
	members(p.body, v.start, func(key []byte, v span) {
		switch string(key) {
		case "model":
			model = v
		case "max_tokens":
			maxTokens = v
		case "messages":
			messages = v
		case "system":
			system = v
		case "metadata":
			metadata = v
		}
	})
	for _, f := range []struct {
		name string
		v    span
	}{{"model", model}, {"max_tokens", maxTokens}, {"messages", messages}} {
		if !f.v.ok() {
			return field(".params."+f.name, "Field required")
		}
	}
	var ok bool
	if r.model, ok = p.model(model); !ok {
		return field(".params.model", "Input should be a non-empty string")
	}
	if r.maxTokens, ok = intAt(p.body, maxTokens); !ok || r.maxTokens < 0 {
		return field(".params.max_tokens", "Input should be an integer greater than or equal to 0")
	}
	if p.body[messages.start] != '[' {
		return field(".params.messages", "Input should be a valid list")
	}
	if len(bytes.TrimSpace(p.body[messages.start+1:messages.end-1])) == 0 {
		return field(".params.messages", "List should have at least 1 item, not 0")
	}
	chars := textLen(p.body, messages)
	if system.ok() {
		chars += textLen(p.body, system)
	}
	r.promptTokens = estimateTokens(chars)
	if metadata.ok() && p.body[metadata.start] == '{' {
		members(p.body, metadata.start, func(key []byte, v span) {
			if string(key) == "user_id" {
				r.userID, _ = decodeString(p.body, v)
			}
		})
	}
	return nil
}

// model decodes the model name at v, sharing one string per name.
func (p *msgParser) model(v span) (string, bool) {
	raw := p.body[v.start:v.end]
	if s, ok := p.models[string(raw)]; ok {
		return s, true
	}
	s, ok := decodeString(p.body, v)
	if !ok || s == "" {
		return "", false
	}
	p.models[string(raw)] = s
	return s, true
}

// decodeString decodes the JSON string at v; false if v is not a string.
func decodeString(data []byte, v span) (string, bool) {
	raw := data[v.start:v.end]
	if raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}

// intAt decodes the JSON number at v if it is a whole number that fits an int64.
func intAt(data []byte, v span) (int64, bool) {
	raw := data[v.start:v.end]
	if !isNumberStart(raw[0]) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// validCustomID reports whether id matches customIDPattern.
func validCustomID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
