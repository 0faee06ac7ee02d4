package emulator

import (
	"bytes"
	"encoding/json"
	"strconv"
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

// inputRequest is one valid line of an input file, reduced to what its
// execution reads: its size does not depend on the size of the body.
type inputRequest struct {
	customID     string
	promptTokens int64
	n            int  // chat completions: choices
	dimensions   int  // embeddings: vector size
	inputs       int  // embeddings and moderations: inputs
	executed     bool // its output or error line is written
	// Echoed by /v1/responses, decoded again when it executes: spans of
	// the input file, absent when the body lacks them.
	instructions, maxOutputTokens span
}

// input is a parsed input file: its requests, or why the batch fails.
type input struct {
	reqs   []inputRequest
	model  string
	tokens int64
	errs   []BatchError
}

// parseInput validates an input file against OpenAI's batch rules: every
// line a JSON object with a unique string custom_id, method POST, url equal
// to endpoint and a body object whose model is the same on every line;
// 1..50000 lines. It walks the file in place, line by line; the spans of
// the requests are offsets in it.
func parseInput(data *content, endpoint string) input {
	count := countLines(data)
	if count == 0 {
		return input{errs: []BatchError{{Code: "empty_file",
			Message: "The batch input file is empty. Please ensure that the batch contains at least one request."}}}
	}
	if count > MaxRequestsPerBatch {
		return input{errs: []BatchError{{Code: "too_many_tasks",
			Message: "The batch input file is larger than the 50000 maximum number of requests."}}}
	}
	in := input{reqs: make([]inputRequest, 0, count)}
	seen := make(map[string]struct{}, count)
	addErr := func(e BatchError) {
		if len(in.errs) < maxReportedErrors {
			in.errs = append(in.errs, e)
		}
	}
	n := 0
	data.eachLine(func(line []byte, off int64) bool {
		if n++; n > count {
			return false
		}
		r, model, bad := parseLine(bytes.TrimSuffix(line, []byte("\r")), endpoint)
		switch {
		case bad != nil:
			addErr(lineErr(n, bad.param, bad.code, bad.msg))
			return true
		case in.model == "":
			in.model = model
		case model != in.model:
			addErr(lineErr(n, "body.model", "mismatched_model",
				"The provided model does not match the model specified in other requests in this batch."))
			return true
		}
		if _, dup := seen[r.customID]; dup {
			addErr(lineErr(n, "custom_id", "duplicate_custom_id",
				"The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch."))
			return true
		}
		seen[r.customID] = struct{}{}
		r.instructions, r.maxOutputTokens = r.instructions.shift(off), r.maxOutputTokens.shift(off)
		in.tokens += r.promptTokens
		in.reqs = append(in.reqs, r)
		return true
	})
	if len(in.errs) > 0 {
		return input{errs: in.errs}
	}
	return in
}

// countLines counts the lines of data up to the last one that is not
// blank: trailing blank lines do not count.
func countLines(data *content) int {
	n, last := 0, 0
	data.eachLine(func(line []byte, _ int64) bool {
		if n++; len(bytes.TrimSpace(line)) > 0 {
			last = n
		}
		return true
	})
	return last
}

// lineFault is why one line is invalid.
type lineFault struct{ param, code, msg string }

// parseLine checks one request line on its own (parseInput checks model
// and custom_id across lines) and returns it with its model. Its spans are
// offsets in line.
func parseLine(line []byte, endpoint string) (inputRequest, string, *lineFault) {
	var r inputRequest
	if !json.Valid(line) || line[skipSpace(line, 0)] != '{' {
		return r, "", &lineFault{"", "invalid_json_line", "This line is not parseable as valid JSON."}
	}
	var customID, method, url, body span
	members(line, skipSpace(line, 0), func(key []byte, v span) {
		switch string(key) {
		case "custom_id":
			customID = v
		case "method":
			method = v
		case "url":
			url = v
		case "body":
			body = v
		}
	})
	var ok bool
	if r.customID, ok = stringAt(line, customID); !ok {
		return r, "", &lineFault{"custom_id", "missing_required_parameter", "Missing required parameter: 'custom_id'."}
	}
	m, ok := stringAt(line, method)
	if !ok {
		return r, "", &lineFault{"method", "missing_required_parameter", "Missing required parameter: 'method'."}
	}
	if m != "POST" {
		return r, "", &lineFault{"method", "invalid_method", "Invalid value for 'method': only POST is supported."}
	}
	u, ok := stringAt(line, url)
	if !ok {
		return r, "", &lineFault{"url", "missing_required_parameter", "Missing required parameter: 'url'."}
	}
	if u != endpoint {
		return r, "", &lineFault{"url", "invalid_url", "The URL provided for this request does not match the batch endpoint."}
	}
	// Decoding the body into a map fails unless it is an object whose
	// numbers all fit a float64; null decodes to no map.
	if !body.ok() || line[body.start] != '{' || !numbersFit(line[body.start:body.end]) {
		return r, "", &lineFault{"body", "missing_required_parameter", "Missing required parameter: 'body' (an object)."}
	}
	f := bodyFieldsAt(line, body)
	model, ok := stringAt(line, f.model)
	if !ok {
		return r, "", &lineFault{"body.model", "missing_required_parameter", "Missing required parameter: 'body.model'."}
	}
	r.promptTokens = estimateTokens(f.promptChars(line, endpoint))
	r.n = intParam(line, f.n, 1, 8)
	r.dimensions = intParam(line, f.dimensions, 8, 4096)
	r.inputs = embeddingInputs(line, f.input)
	r.instructions, r.maxOutputTokens = f.instructions, f.maxOutputTokens
	return r, model, nil
}

// stringAt returns the value at v if it is a non-empty JSON string.
func stringAt(data []byte, v span) (string, bool) {
	if !v.ok() || data[v.start] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(data[v.start:v.end], &s); err != nil || s == "" {
		return "", false
	}
	return s, true
}

// bodyFields are the members of a request body the emulator reads; a
// repeated key keeps its last value, as a decoded map would.
type bodyFields struct {
	model, n, dimensions, input, prompt, messages, instructions, maxOutputTokens span
}

func bodyFieldsAt(data []byte, body span) bodyFields {
	var f bodyFields
	members(data, body.start, func(key []byte, v span) {
		switch string(key) {
		case "model":
			f.model = v
		case "n":
			f.n = v
		case "dimensions":
			f.dimensions = v
		case "input":
			f.input = v
		case "prompt":
			f.prompt = v
		case "messages":
			f.messages = v
		case "instructions":
			f.instructions = v
		case "max_output_tokens":
			f.maxOutputTokens = v
		}
	})
	return f
}

// estimateTokens is the emulator's deterministic token count: ~4 characters
// a token, at least 1.
func estimateTokens(chars int) int64 {
	return max(1, int64((chars+3)/4))
}

// promptChars counts the characters of a request's prompt: the strings under
// the endpoint's input fields, ignoring structural keys such as role and type.
func (f bodyFields) promptChars(data []byte, endpoint string) int {
	var fields []span
	switch endpoint {
	case "/v1/chat/completions":
		fields = []span{f.messages}
	case "/v1/responses":
		fields = []span{f.instructions, f.input}
	case "/v1/completions":
		fields = []span{f.prompt}
	default:
		fields = []span{f.input, f.prompt}
	}
	n := 0
	for _, v := range fields {
		if v.ok() {
			n += textLen(data, v)
		}
	}
	return n
}

// intParam reads a positive integer body parameter, clamped to [1,hi]; def
// when absent, not a number or below 1.
func intParam(data []byte, v span, def, hi int) int {
	if !v.ok() || !isNumberStart(data[v.start]) {
		return def
	}
	f, err := strconv.ParseFloat(string(data[v.start:v.end]), 64)
	if err != nil || f < 1 {
		return def
	}
	if f >= float64(hi) {
		return hi
	}
	return int(f)
}

// embeddingInputs counts the inputs of an embeddings or moderations
// request: a string or a token array is one, an array of those is many.
func embeddingInputs(data []byte, v span) int {
	if !v.ok() || data[v.start] != '[' {
		return 1
	}
	n, tokens := 0, false
	elements(data, v.start, func(e span) {
		if n == 0 {
			tokens = isNumberStart(data[e.start])
		}
		n++
	})
	if n == 0 || tokens {
		return 1
	}
	return n
}
