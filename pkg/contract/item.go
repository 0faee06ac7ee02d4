package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

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

// ValidItemID reports whether id meets the custom_id rule of items: 1..64
// of [A-Za-z0-9_-] (it is the item's idempotency key, and valid as a
// vendor custom_id of both providers).
func ValidItemID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

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
// invalid), so the caller can answer under it, and "" otherwise: the value
// of the first key spelt exactly "custom_id".
//
// It decodes as encoding/json would decode the message into an Item (keys
// matched case-insensitively, the last of duplicate keys wins, duplicate
// "metadata" objects merge, null leaves a string field as it was, unknown
// fields are ignored, invalid UTF-8 becomes U+FFFD), returning the same
// partly decoded Item when a field has the wrong type, but in one pass
// with gjson (encoding/json's reflection was ~10 µs an item). The item
// owns its memory: nothing in it aliases data.
func DecodeItem(data []byte) (Item, string, error) {
	var it Item
	t := bytes.TrimSpace(data)
	if len(t) == 0 {
		return it, "", Errorf(CodeInvalidJSON, "message is empty")
	}
	if t[0] != '{' || !gjson.ValidBytes(t) {
		var v map[string]json.RawMessage
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("not an object")
		}
		return it, "", Errorf(CodeInvalidJSON, "message is not a JSON object: %v", err)
	}
	id, err := it.decodeFields(t)
	// bytes.TrimSpace trims more than JSON's four whitespace characters
	// (\v, \f, U+0085, U+00A0, ...): such a character before the object is
	// a syntax error (nothing decoded), after it trailing data.
	j := trimJSONSpace(data)
	switch {
	case len(j) != len(t) && j[0] != '{':
		return Item{}, id, Errorf(CodeInvalidField, "decode request: invalid character %q looking for beginning of value", j[0])
	case len(t) >= 2*(maxNestingDepth+1) && tooDeep(t):
		return Item{}, id, Errorf(CodeInvalidField, "decode request: exceeded max depth (%d)", maxNestingDepth)
	case err != nil:
		return it, id, Errorf(CodeInvalidField, "decode request: %v", err)
	case len(j) != len(t):
		return it, id, Errorf(CodeInvalidField, "decode request: trailing data after the JSON object")
	}
	if err := it.Validate(); err != nil {
		return it, id, err
	}
	return it, id, nil
}

// maxNestingDepth is encoding/json's bound on nested objects and arrays.
const maxNestingDepth = 10000

// decodeFields fills it from obj, a valid JSON object, with encoding/json's
// semantics; it returns the value of the first "custom_id" key when it is
// a valid item custom_id, and the first wrong type met.
func (it *Item) decodeFields(obj []byte) (id string, err error) {
	// obj is only read, and every string kept is a copy.
	src := unsafe.String(unsafe.SliceData(obj), len(obj))
	idSeen := false
	gjson.Parse(src).ForEach(func(k, v gjson.Result) bool {
		key, _ := unquote(k.Raw)
		var dst *string
		f := fieldOf(key)
		switch f {
		case fieldCustomID:
			dst = &it.CustomID
		case fieldProvider:
			dst = &it.Provider
		case fieldEndpoint:
			dst = &it.Endpoint
		case fieldBody:
			it.Body = json.RawMessage(v.Raw) // a copy
			return true
		case fieldMetadata:
			if e := it.decodeMetadata(v); e != nil && err == nil {
				err = e
			}
			return true
		default:
			return true // unknown fields are ignored
		}
		switch v.Type {
		case gjson.String:
			*dst = ownedString(v.Raw)
		case gjson.Null: // leaves the field as it was
		default:
			if err == nil {
				err = typeError(v, "Item."+itemFieldNames[f], "string")
			}
		}
		if !idSeen && key == "custom_id" {
			// The id (as gjson.Get finds it) is the first such key's value.
			idSeen = true
			if v.Type == gjson.String && ValidItemID(it.CustomID) {
				id = it.CustomID
			}
		}
		return true
	})
	return id, err
}

// The fields of an Item, by JSON name.
const (
	fieldNone = iota
	fieldCustomID
	fieldProvider
	fieldEndpoint
	fieldBody
	fieldMetadata
)

var itemFieldNames = [...]string{fieldCustomID: "custom_id", fieldProvider: "provider", fieldEndpoint: "endpoint", fieldBody: "body", fieldMetadata: "metadata"}

// fieldOf is the field an object key names, as encoding/json matches
// them: exactly or else case-insensitively (Unicode simple folding:
// "cuſtom_id" is custom_id too).
func fieldOf(key string) int {
	switch key {
	case "custom_id":
		return fieldCustomID
	case "body":
		return fieldBody
	case "metadata":
		return fieldMetadata
	case "provider":
		return fieldProvider
	case "endpoint":
		return fieldEndpoint
	}
	for f, name := range itemFieldNames {
		if name != "" && strings.EqualFold(key, name) {
			return f
		}
	}
	return fieldNone
}

// decodeMetadata decodes v into it.Metadata as encoding/json does into a
// map[string]string: null clears it, an object adds its pairs (null as
// "", another type as "" and an error).
func (it *Item) decodeMetadata(v gjson.Result) (err error) {
	switch {
	case v.Type == gjson.Null:
		it.Metadata = nil
		return nil
	case !v.IsObject():
		return typeError(v, "Item.metadata", "map[string]string")
	}
	if it.Metadata == nil {
		it.Metadata = make(map[string]string)
	}
	v.ForEach(func(k, v gjson.Result) bool {
		key := ownedString(k.Raw)
		switch v.Type {
		case gjson.String:
			it.Metadata[key] = ownedString(v.Raw)
		case gjson.Null:
			it.Metadata[key] = ""
		default:
			it.Metadata[key] = ""
			if err == nil {
				err = typeError(v, "Item.metadata."+key, "string")
			}
		}
		return true
	})
	return err
}

func typeError(v gjson.Result, field, typ string) error {
	kind := "number"
	switch {
	case v.Type == gjson.String:
		kind = "string"
	case v.Type == gjson.True || v.Type == gjson.False:
		kind = "bool"
	case v.IsObject():
		kind = "object"
	case v.IsArray():
		kind = "array"
	}
	return fmt.Errorf("json: cannot unmarshal %s into Go struct field %s of type %s", kind, field, typ)
}

// ownedString is the JSON string raw unquoted, in memory of its own.
func ownedString(raw string) string {
	s, fresh := unquote(raw)
	if !fresh {
		// The constants most items carry cost no allocation.
		for _, c := range knownStrings {
			if s == c {
				return c
			}
		}
		s = strings.Clone(s)
	}
	return s
}

var knownStrings = append([]string{ProviderOpenAI, ProviderAnthropic, AnthropicEndpoint}, Endpoints...)

// unquote is the JSON string raw (quotes included, valid JSON) unquoted
// as encoding/json does: invalid UTF-8 and unpaired surrogates become
// U+FFFD. It is a substring of raw unless fresh.
func unquote(raw string) (s string, fresh bool) {
	s = raw[1 : len(raw)-1]
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain || (strings.IndexByte(s, '\\') < 0 && utf8.ValidString(s)) {
		return s, false
	}
	b := make([]byte, 0, len(s)+utf8.UTFMax)
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			r++
			switch s[r] {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := getu4(s[r+1:])
				r += 5
				if utf16.IsSurrogate(rr) {
					if r+6 <= len(s) && s[r] == '\\' && s[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, getu4(s[r+2:])); dec != unicode.ReplacementChar {
							// A valid pair.
							r += 6
							b = utf8.AppendRune(b, dec)
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, s[r])
			}
			r++
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRuneInString(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return string(b), true
}

// getu4 is the code of the 4 hex digits starting s (valid JSON).
func getu4(s string) rune {
	var r rune
	for _, c := range []byte(s[:4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// trimJSONSpace trims JSON's whitespace (space, \t, \n, \r).
func trimJSONSpace(b []byte) []byte {
	for len(b) > 0 && isJSONSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isJSONSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// tooDeep reports whether the valid JSON b nests objects and arrays more
// than maxNestingDepth deep.
func tooDeep(b []byte) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			if depth++; depth > maxNestingDepth {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
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
	// it.Model() != "", without copying the model.
	if m := gjson.Get(unsafe.String(unsafe.SliceData(body), len(body)), "model"); m.Type != gjson.String || m.Str == "" {
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
