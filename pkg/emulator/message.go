package emulator

// messageJSON is Anthropic's Message, the reply of a succeeded request,
// shaped so it decodes with anthropic-sdk-go's Message.
type messageJSON struct {
	ID           string       `json:"id"`
	Type         string       `json:"type"`
	Role         string       `json:"role"`
	Model        string       `json:"model"`
	Content      []textBlock  `json:"content"`
	StopReason   string       `json:"stop_reason"`
	StopSequence *string      `json:"stop_sequence"`
	StopDetails  *struct{}    `json:"stop_details"`
	Container    *struct{}    `json:"container"`
	Diagnostics  *struct{}    `json:"diagnostics"`
	Usage        messageUsage `json:"usage"`
}

type textBlock struct {
	Type      string `json:"type"`
	Text      string `json:"text"`
	Citations []any  `json:"citations"`
}

type messageUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreation            struct {
		Ephemeral5mInputTokens int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1hInputTokens int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	OutputTokensDetails struct {
		ThinkingTokens int64 `json:"thinking_tokens"`
	} `json:"output_tokens_details"`
	ServerToolUse *struct{} `json:"server_tool_use"`
	ServiceTier   string    `json:"service_tier"`
	InferenceGeo  string    `json:"inference_geo"`
	Speed         string    `json:"speed"`
}

// message is the reply to r: the emulator's fixed text for its custom_id
// (padded to ReplyBytes), cut to max_tokens (~4 characters a token) with
// stop_reason max_tokens when it does not fit.
func (e *Emulator) message(r *msgRequest) *messageJSON {
	text := replyText(r.customID, e.cfg.ReplyBytes)
	out, stop := estimateTokens(len(text)), "end_turn"
	if out > r.maxTokens {
		// Reply texts are ASCII (custom_ids are [a-zA-Z0-9_-]), so any cut is valid UTF-8.
		text, out, stop = text[:min(len(text), int(r.maxTokens)*4)], r.maxTokens, "max_tokens"
	}
	m := &messageJSON{
		ID: newMessageID(), Type: "message", Role: "assistant", Model: r.model,
		Content: []textBlock{}, StopReason: stop,
		Usage: messageUsage{InputTokens: r.promptTokens, OutputTokens: out, ServiceTier: "batch", InferenceGeo: "global", Speed: "standard"},
	}
	if text != "" {
		m.Content = append(m.Content, textBlock{Type: "text", Text: text})
	}
	return m
}
