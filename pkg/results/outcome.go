package results

import (
	"encoding/json"
	"strconv"

	"github.com/tidwall/gjson"
)

// Outcome classifies one request's result.
type Outcome int

// Outcomes of a line. The zero value is not a valid outcome.
const (
	Succeeded Outcome = iota + 1 // 2xx response, no error
	Retryable                    // may succeed in a retry batch
	Permanent                    // will fail again: do not retry
)

func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// retryableCodes are the error codes (or, when the code is empty, error
// types) that the contract's batch.retry rules call retryable whatever the
// status: timeouts, server errors, rate limits and batch_expired.
var retryableCodes = map[string]bool{
	"batch_expired":       true,
	"timeout":             true,
	"request_timeout":     true,
	"server_error":        true,
	"rate_limit_exceeded": true,
}

// Outcome classifies the line by the contract's batch.retry rules:
//
//   - Succeeded: status 2xx and no error object;
//   - Retryable: status 5xx, 429 or 408; or, with no such status, an error
//     code (or type) batch_expired, timeout, request_timeout, server_error or
//     rate_limit_exceeded;
//   - Permanent: any other 4xx whatever its code (invalid_request_error,
//     unknown codes), and everything else, including error codes this
//     package does not know (e.g. batch_cancelled): a retry batch costs
//     money, so only known-transient failures are retried.
func (l Line) Outcome() Outcome {
	s := l.StatusCode
	switch {
	case l.Error == nil && s >= 200 && s < 300:
		return Succeeded
	case s == 408 || s == 429 || s >= 500:
		return Retryable
	case s >= 400:
		return Permanent
	case retryableCodes[l.errorCode()]:
		return Retryable
	}
	return Permanent
}

// Reason is a short machine-readable reason for a failed line: the line's
// error code, else the response body's error code, else its error type,
// else "http_<status>", else "unknown". It is "" for a successful line.
func (l Line) Reason() string {
	if l.Outcome() == Succeeded {
		return ""
	}
	if c := l.errorCode(); c != "" {
		return c
	}
	if l.StatusCode != 0 {
		return "http_" + strconv.Itoa(l.StatusCode)
	}
	return "unknown"
}

// Message is the human-readable error message of a failed line ("" if none).
func (l Line) Message() string {
	if l.Error != nil && l.Error.Message != "" {
		return l.Error.Message
	}
	if e := l.bodyError(); e != nil {
		return e.Message
	}
	return ""
}

func (l Line) errorCode() string {
	if l.Error != nil && l.Error.Code != "" {
		return l.Error.Code
	}
	if e := l.bodyError(); e != nil {
		if e.Code != "" {
			return e.Code
		}
		return e.Type
	}
	return ""
}

type bodyError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// bodyError reads OpenAI's error envelope {"error":{message,type,param,code}}
// from a non-2xx body; nil when there is none.
func (l Line) bodyError() *bodyError {
	if len(l.Body) == 0 || (l.StatusCode >= 200 && l.StatusCode < 300) {
		return nil
	}
	var env struct {
		Error *bodyError `json:"error"`
	}
	// A body that does not decode (e.g. "code" is a number) has no usable
	// error object; the status still classifies the line.
	if json.Unmarshal(l.Body, &env) != nil {
		return nil
	}
	return env.Error
}

// Usage is token usage. Its JSON matches contract.Usage, so a value converts
// with contract.Usage(u).
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// Add returns the sum of u and v.
func (u Usage) Add(v Usage) Usage {
	return Usage{u.InputTokens + v.InputTokens, u.OutputTokens + v.OutputTokens, u.TotalTokens + v.TotalTokens}
}

// meta reads model and usage from a successful body, which ParseLine
// has validated: gjson looks only at the fields it needs, where decoding
// the body would scan all of it twice. Usage fields that are not numbers
// (an unexpected shape) count as zero.
func (l Line) meta() (string, Usage) {
	if len(l.Body) == 0 {
		return "", Usage{}
	}
	r := gjson.GetManyBytes(l.Body, "model", "usage")
	model := ""
	if r[0].Type == gjson.String {
		model = r[0].Str
	}
	if !r[1].IsObject() {
		return model, Usage{}
	}
	var in, out, total int64
	r[1].ForEach(func(k, v gjson.Result) bool {
		if v.Type != gjson.Number {
			return true
		}
		n := v.Int()
		switch k.Str {
		case "prompt_tokens", "input_tokens": // chat, completions, embeddings; responses
			in = max(in, n)
		case "completion_tokens", "output_tokens":
			out = max(out, n)
		case "total_tokens":
			total = n
		}
		return true
	})
	u := Usage{InputTokens: in, OutputTokens: out, TotalTokens: total}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.InputTokens + u.OutputTokens
	}
	return model, u
}

// Usage reads body.usage of the response: prompt_tokens/completion_tokens
// (chat completions, completions), prompt_tokens (embeddings) or
// input_tokens/output_tokens (responses). TotalTokens is body.usage
// total_tokens, or input + output when absent. A line without a body or
// usage has zero usage.
func (l Line) Usage() Usage {
	_, u := l.meta()
	return u
}

// Model is body.model of the response ("" if absent), e.g.
// "gpt-4o-mini-2024-07-18".
func (l Line) Model() string {
	m, _ := l.meta()
	return m
}
