package results_test

import (
	"fmt"
)

// okLine is a chat completion success line as OpenAI writes it.
func okLine(customID string, in, out int64) string {
	return fmt.Sprintf(`{"id":"batch_req_ok_%[1]s","custom_id":"%[1]s","response":{"status_code":200,"request_id":"req_%[1]s","body":{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%[2]d,"completion_tokens":%[3]d,"total_tokens":%[4]d}}},"error":null}`,
		customID, in, out, in+out)
}

// failLine is a failed request with an HTTP status and OpenAI's error body.
func failLine(customID string, status int, typ, code string) string {
	c := "null"
	if code != "" {
		c = `"` + code + `"`
	}
	return fmt.Sprintf(`{"id":"batch_req_f%[2]d_%[1]s","custom_id":"%[1]s","response":{"status_code":%[2]d,"request_id":"req_%[1]s","body":{"error":{"message":"failed","type":"%[3]s","param":null,"code":%[4]s}}},"error":null}`,
		customID, status, typ, c)
}

// errLine is a request that did not run: response null, error object.
func errLine(customID, code string) string {
	return fmt.Sprintf(`{"id":"batch_req_e_%[1]s","custom_id":"%[1]s","response":null,"error":{"code":"%[2]s","message":"not run"}}`,
		customID, code)
}
