package emulator

import (
	"bytes"
	"encoding/json"
	"strings"
)

// MaxRequestsPerBatch is OpenAI's limit of requests in one input file.
const MaxRequestsPerBatch = 50_000

// maxReportedErrors bounds errors.data of a failed batch.
const maxReportedErrors = 100

// Test triggers: a request's custom_id containing one of these decides its
// outcome, so tests can choose it.
const (
	// TriggerFailOnce fails with 500 the first time that custom_id is executed
	// in the emulator's lifetime and succeeds afterwards.
	TriggerFailOnce = "fail-once"
	// TriggerFailAlways always fails with 500.
	TriggerFailAlways = "fail-always"
	// TriggerFail429 always fails with 429 rate_limit_exceeded.
	TriggerFail429 = "fail-429"
	// TriggerFail400 always fails with 400 invalid_request_error.
	TriggerFail400 = "fail-400"
	// TriggerNeverFinish is never executed: its batch stays in_progress
	// until it expires or is cancelled.
	TriggerNeverFinish = "never-finish"
	// ModelExpireMe as a request's model keeps the whole batch in_progress,
	// executing nothing, until it expires or is cancelled.
	ModelExpireMe = "expire-me"
)

// BatchError is one entry of a failed batch's errors.data.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

func lineErr(line int, param, code, msg string) BatchError {
	return BatchError{Code: code, Message: msg, Param: strPtr(param), Line: &line}
}

// inputRequest is one valid line of an input file.
type inputRequest struct {
	line         int
	customID     string
	body         map[string]any
	promptTokens int64
}

// input is a parsed input file: its requests, or why the batch fails.
type input struct {
	reqs   []*inputRequest
	model  string
	tokens int64
	errs   []BatchError
}

// parseInput validates an input file against OpenAI's batch rules: every
// line a JSON object with a unique string custom_id, method POST, url equal
// to endpoint and a body object whose model is the same on every line;
// 1..50000 lines.
func parseInput(data []byte, endpoint string) input {
	lines := bytes.Split(data, []byte("\n"))
	for n := len(lines); n > 0 && len(bytes.TrimSpace(lines[n-1])) == 0; n-- {
		lines = lines[:n-1] // trailing blank lines
	}
	if len(lines) == 0 {
		return input{errs: []BatchError{{Code: "empty_file",
			Message: "The batch input file is empty. Please ensure that the batch contains at least one request."}}}
	}
	if len(lines) > MaxRequestsPerBatch {
		return input{errs: []BatchError{{Code: "too_many_tasks",
			Message: "The batch input file is larger than the 50000 maximum number of requests."}}}
	}
	var in input
	seen := make(map[string]int, len(lines))
	addErr := func(e BatchError) {
		if len(in.errs) < maxReportedErrors {
			in.errs = append(in.errs, e)
		}
	}
	for i, raw := range lines {
		n := i + 1
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			addErr(lineErr(n, "", "invalid_json_line", "This line is not parseable as valid JSON."))
			continue
		}
		customID, ok := stringField(obj, "custom_id")
		if !ok {
			addErr(lineErr(n, "custom_id", "missing_required_parameter", "Missing required parameter: 'custom_id'."))
			continue
		}
		method, ok := stringField(obj, "method")
		if !ok {
			addErr(lineErr(n, "method", "missing_required_parameter", "Missing required parameter: 'method'."))
			continue
		}
		if method != "POST" {
			addErr(lineErr(n, "method", "invalid_method", "Invalid value for 'method': only POST is supported."))
			continue
		}
		url, ok := stringField(obj, "url")
		if !ok {
			addErr(lineErr(n, "url", "missing_required_parameter", "Missing required parameter: 'url'."))
			continue
		}
		if url != endpoint {
			addErr(lineErr(n, "url", "invalid_url", "The URL provided for this request does not match the batch endpoint."))
			continue
		}
		var body map[string]any
		if err := json.Unmarshal(obj["body"], &body); err != nil || body == nil {
			addErr(lineErr(n, "body", "missing_required_parameter", "Missing required parameter: 'body' (an object)."))
			continue
		}
		model, _ := body["model"].(string)
		if model == "" {
			addErr(lineErr(n, "body.model", "missing_required_parameter", "Missing required parameter: 'body.model'."))
			continue
		}
		if in.model == "" {
			in.model = model
		} else if model != in.model {
			addErr(lineErr(n, "body.model", "mismatched_model",
				"The provided model does not match the model specified in other requests in this batch."))
			continue
		}
		if _, dup := seen[customID]; dup {
			addErr(lineErr(n, "custom_id", "duplicate_custom_id",
				"The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch."))
			continue
		}
		seen[customID] = n
		r := &inputRequest{line: n, customID: customID, body: body, promptTokens: estimateTokens(promptChars(endpoint, body))}
		in.tokens += r.promptTokens
		in.reqs = append(in.reqs, r)
	}
	if len(in.errs) > 0 {
		return input{errs: in.errs}
	}
	return in
}

// stringField returns obj[key] if it is a non-empty JSON string.
func stringField(obj map[string]json.RawMessage, key string) (string, bool) {
	var s string
	if err := json.Unmarshal(obj[key], &s); err != nil || s == "" {
		return "", false
	}
	return s, true
}

// estimateTokens is the emulator's deterministic token count: ~4 characters
// a token, at least 1.
func estimateTokens(chars int) int64 {
	return max(1, int64((chars+3)/4))
}

// promptChars counts the characters of a request's prompt: the strings under
// the endpoint's input fields, ignoring structural keys such as role and type.
func promptChars(endpoint string, body map[string]any) int {
	var fields []string
	switch endpoint {
	case "/v1/chat/completions":
		fields = []string{"messages"}
	case "/v1/responses":
		fields = []string{"instructions", "input"}
	case "/v1/completions":
		fields = []string{"prompt"}
	default:
		fields = []string{"input", "prompt"}
	}
	n := 0
	for _, f := range fields {
		n += textLen(body[f])
	}
	return n
}

func textLen(v any) int {
	switch v := v.(type) {
	case string:
		return len(v)
	case float64:
		return 4 // a token id
	case []any:
		n := 0
		for _, e := range v {
			n += textLen(e)
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range v {
			switch strings.ToLower(k) {
			case "role", "type", "id", "detail", "name", "status", "format":
				continue
			}
			n += textLen(e)
		}
		return n
	}
	return 0
}
