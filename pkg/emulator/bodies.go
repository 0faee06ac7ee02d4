package emulator

import (
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"strings"
	"time"
)

// usage is the token usage of one executed request.
type usage struct {
	input, output int64
}

// replyText is the deterministic answer of every generating endpoint,
// padded to at least size bytes (Config.ReplyBytes) with a fixed filler.
func replyText(customID string, size int) string {
	text := "This is the emulator's reply to request " + customID + "."
	if len(text) >= size {
		return text
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(text)
	for b.Len() < size {
		b.WriteString(replyFiller[:min(len(replyFiller), size-b.Len())])
	}
	return b.String()
}

const replyFiller = " The quick brown fox jumps over the lazy dog."

// responseBody builds the endpoint's success body for a request of b,
// shaped like OpenAI's so it decodes with openai-go's types.
func (e *Emulator) responseBody(b *batch, r *inputRequest, at time.Time) (any, usage) {
	model := b.in.model
	text := replyText(r.customID, e.cfg.ReplyBytes)
	out := estimateTokens(len(text))
	in := r.promptTokens
	created := at.Unix()
	switch b.endpoint {
	case "/v1/chat/completions":
		n := r.n
		choices := make([]map[string]any, n)
		for i := range choices {
			choices[i] = map[string]any{
				"index": i,
				"message": map[string]any{
					"role": "assistant", "content": text, "refusal": nil, "annotations": []any{},
				},
				"logprobs":      nil,
				"finish_reason": "stop",
			}
		}
		out *= int64(n)
		return map[string]any{
			"id":                 "chatcmpl-" + randID(14),
			"object":             "chat.completion",
			"created":            created,
			"model":              model,
			"choices":            choices,
			"usage":              completionUsage(in, out),
			"service_tier":       "default",
			"system_fingerprint": "fp_emulator",
		}, usage{in, out}
	case "/v1/completions":
		return map[string]any{
			"id":      "cmpl-" + randID(14),
			"object":  "text_completion",
			"created": created,
			"model":   model,
			"choices": []map[string]any{{
				"text": text, "index": 0, "logprobs": nil, "finish_reason": "stop",
			}},
			"usage":              completionUsage(in, out),
			"system_fingerprint": "fp_emulator",
		}, usage{in, out}
	case "/v1/embeddings":
		data := make([]map[string]any, r.inputs)
		for i := range data {
			data[i] = map[string]any{"object": "embedding", "index": i, "embedding": vector(r.customID, i, r.dimensions)}
		}
		return map[string]any{
			"object": "list",
			"data":   data,
			"model":  model,
			"usage":  map[string]any{"prompt_tokens": in, "total_tokens": in},
		}, usage{in, 0}
	case "/v1/moderations":
		results := make([]map[string]any, r.inputs)
		for i := range results {
			cats, scores := map[string]bool{}, map[string]float64{}
			for _, c := range moderationCategories {
				cats[c], scores[c] = false, 0.0001
			}
			results[i] = map[string]any{"flagged": false, "categories": cats, "category_scores": scores}
		}
		return map[string]any{"id": "modr-" + randID(14), "model": model, "results": results}, usage{in, 0}
	default: // "/v1/responses"
		return map[string]any{
			"id":                   "resp_" + randID(24),
			"object":               "response",
			"created_at":           created,
			"completed_at":         created,
			"status":               "completed",
			"background":           false,
			"error":                nil,
			"incomplete_details":   nil,
			"instructions":         b.value(r.instructions),
			"max_output_tokens":    b.value(r.maxOutputTokens),
			"model":                model,
			"parallel_tool_calls":  true,
			"previous_response_id": nil,
			"reasoning":            map[string]any{"effort": nil, "summary": nil},
			"service_tier":         "default",
			"store":                true,
			"temperature":          1.0,
			"text":                 map[string]any{"format": map[string]any{"type": "text"}},
			"tool_choice":          "auto",
			"tools":                []any{},
			"top_p":                1.0,
			"truncation":           "disabled",
			"user":                 nil,
			"metadata":             map[string]any{},
			"output": []map[string]any{{
				"type":   "message",
				"id":     "msg_" + randID(24),
				"status": "completed",
				"role":   "assistant",
				"content": []map[string]any{{
					"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{},
				}},
			}},
			"usage": map[string]any{
				"input_tokens":          in,
				"input_tokens_details":  map[string]any{"cached_tokens": 0},
				"output_tokens":         out,
				"output_tokens_details": map[string]any{"reasoning_tokens": 0},
				"total_tokens":          in + out,
			},
		}, usage{in, out}
	}
}

var moderationCategories = []string{
	"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
	"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic",
}

func completionUsage(in, out int64) map[string]any {
	return map[string]any{
		"prompt_tokens":     in,
		"completion_tokens": out,
		"total_tokens":      in + out,
		"prompt_tokens_details": map[string]any{
			"cached_tokens": 0, "audio_tokens": 0,
		},
		"completion_tokens_details": map[string]any{
			"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
		},
	}
}

// vector is a deterministic unit vector derived from the request.
func vector(customID string, index, dims int) []float64 {
	v := make([]float64, dims)
	var norm float64
	for i := range v {
		h := fnv.New64a()
		_, _ = h.Write([]byte(customID))
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], uint64(index))
		binary.LittleEndian.PutUint64(b[8:], uint64(i))
		_, _ = h.Write(b[:])
		v[i] = float64(h.Sum64()%2001)/1000 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		norm = 1
	}
	for i := range v {
		v[i] = math.Round(v[i]/norm*1e6) / 1e6
	}
	return v
}

// errorBody is the body of a failed request inside a batch, by status code.
func errorBody(status int) *apiError {
	switch status {
	case 429:
		return errRateLimited()
	case 400:
		return invalid("", "invalid_request", "The request is invalid (emulated failure).")
	default:
		return errServer(status)
	}
}

// value decodes the JSON value at v in b's input file; nil when absent.
func (b *batch) value(v span) any {
	if !v.ok() {
		return nil
	}
	var x any
	_ = json.Unmarshal(b.data.slice(v), &x)
	return x
}
