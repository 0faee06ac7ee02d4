package results

import (
	"encoding/json"
	"strconv"
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

type bodyMeta struct {
	Model string `json:"model"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`     // chat, completions, embeddings
		CompletionTokens int64 `json:"completion_tokens"` // chat, completions
		InputTokens      int64 `json:"input_tokens"`      // responses
		OutputTokens     int64 `json:"output_tokens"`     // responses
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

// meta reads model and usage from a successful body. Bodies whose usage is
// not the expected shape count as zero usage.
func (l Line) meta() (string, Usage) {
	if len(l.Body) == 0 {
		return "", Usage{}
	}
	var m bodyMeta
	if json.Unmarshal(l.Body, &m) != nil {
		// A body whose usage has an unexpected shape still has a model.
		var onlyModel struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(l.Body, &onlyModel)
		return onlyModel.Model, Usage{}
	}
	if m.Usage == nil {
		return m.Model, Usage{}
	}
	u := Usage{
		InputTokens:  max(m.Usage.InputTokens, m.Usage.PromptTokens),
		OutputTokens: max(m.Usage.OutputTokens, m.Usage.CompletionTokens),
		TotalTokens:  m.Usage.TotalTokens,
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.InputTokens + u.OutputTokens
	}
	return m.Model, u
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
