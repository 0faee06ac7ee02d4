package emulator

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseInput: parseInput, which walks lines in place, reads every input
// file exactly as decoding each line into maps does (parseInputMaps): the
// same errors, or the same requests with the same prompt tokens and
// parameters.
func FuzzParseInput(f *testing.F) {
	for _, seed := range []string{
		line("a", "m") + "\n" + line("b", "m") + "\n",
		`{"custom_id":`,
		"\n\n",
		line("a", "m") + "\r\n" + line("a", "m"),
		line("a", "m") + "\n\n" + line("b", "m") + "\n \t\r\n\n",
		"null\n[]\n" + `"x"` + "\n{}",
		`{"custom_\u0069d":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","model":"n","messages":[{"content":"abc","content":"de","ROLE":"user","Kind":"x"}]}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","temperature":1e400}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","n":1e300,"messages":[{"content":"caf\u00e9 \ud83d\ude00 \ud800 ` +
			"\xff\xfe\", \"\xff\":\"a\",\"\xfe\":\"b\",\"\ufffd\":\"c\"}]}}",
		`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":[[1,2],[3]],"dimensions":3.7}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":[1,2,3],"dimensions":-2}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/moderations","body":{"model":"m","input":["x","y",null]}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/responses","body":{"model":"m","instructions":"be <brief> & kind","input":[{"type":"message","content":[{"type":"input_text","text":"hi"}]}],"max_output_tokens":1e3}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":[1,2,"three",true,{"a":"b","id":"c","\u212Aey":"d"}]}}`,
		`{"custom_id":7,"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}` + "\n" +
			`{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}` + "\n" +
			`{"custom_id":"c","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}` + "\n" +
			`{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":null}` + "\n" +
			`{"custom_id":"e","method":"POST","url":"/v1/chat/completions","body":{"model":""}}`,
	} {
		for ep := range batchEndpoints {
			f.Add([]byte(seed), uint8(ep))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, ep uint8) {
		endpoint := batchEndpoints[int(ep)%len(batchEndpoints)]
		want := parseInputMaps(data, endpoint)
		oneBlock, lineBlocks := contentOf(data), blockPerLine(data)
		for _, c := range []*content{&oneBlock, &lineBlocks} {
			checkParse(t, c, endpoint, want)
		}
	})
}

// blockPerLine is data as a chunked upload with one line per block.
func blockPerLine(data []byte) content {
	var c content
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n') + 1
		if i == 0 {
			i = len(data)
		}
		c.blocks = append(c.blocks, data[:i])
		c.size += int64(i)
		data = data[i:]
	}
	return c
}

func checkParse(t *testing.T, data *content, endpoint string, want mapInput) {
	t.Helper()
	in := parseInput(data, endpoint)
	if !reflect.DeepEqual(in.errs, want.errs) {
		t.Fatalf("%d blocks: errors %s, want %s", len(data.blocks), mustJSON(in.errs), mustJSON(want.errs))
	}
	if in.errs != nil {
		if len(in.reqs) != 0 || len(in.errs) > maxReportedErrors {
			t.Fatalf("failed input with %d requests, %d errors", len(in.reqs), len(in.errs))
		}
		return
	}
	if in.model != want.model || in.tokens != want.tokens || len(in.reqs) != len(want.reqs) {
		t.Fatalf("model %q, %d tokens, %d requests; want %q, %d, %d",
			in.model, in.tokens, len(in.reqs), want.model, want.tokens, len(want.reqs))
	}
	b := &batch{data: *data}
	for i, r := range in.reqs {
		w := want.reqs[i]
		got := []any{r.customID, r.promptTokens, r.n, r.dimensions, r.inputs, b.value(r.instructions), b.value(r.maxOutputTokens)}
		exp := []any{w.customID, w.promptTokens, mapIntParam(w.body, "n", 1, 8), mapIntParam(w.body, "dimensions", 8, 4096),
			mapEmbeddingInputs(w.body["input"]), w.body["instructions"], w.body["max_output_tokens"]}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("%d blocks, request %d: %v, want %v", len(data.blocks), i, got, exp)
		}
	}
}

// mapRequest is a request line decoded into maps.
type mapRequest struct {
	customID     string
	body         map[string]any
	promptTokens int64
}

type mapInput struct {
	reqs   []mapRequest
	model  string
	tokens int64
	errs   []BatchError
}

// parseInputMaps is the reference parseInput: it splits the file and
// decodes every line and body into maps.
func parseInputMaps(data []byte, endpoint string) mapInput {
	lines := bytes.Split(data, []byte("\n"))
	for n := len(lines); n > 0 && len(bytes.TrimSpace(lines[n-1])) == 0; n-- {
		lines = lines[:n-1]
	}
	if len(lines) == 0 {
		return mapInput{errs: []BatchError{{Code: "empty_file",
			Message: "The batch input file is empty. Please ensure that the batch contains at least one request."}}}
	}
	if len(lines) > MaxRequestsPerBatch {
		return mapInput{errs: []BatchError{{Code: "too_many_tasks",
			Message: "The batch input file is larger than the 50000 maximum number of requests."}}}
	}
	var in mapInput
	seen := map[string]bool{}
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
		customID, ok := mapString(obj, "custom_id")
		if !ok {
			addErr(lineErr(n, "custom_id", "missing_required_parameter", "Missing required parameter: 'custom_id'."))
			continue
		}
		method, ok := mapString(obj, "method")
		if !ok {
			addErr(lineErr(n, "method", "missing_required_parameter", "Missing required parameter: 'method'."))
			continue
		}
		if method != "POST" {
			addErr(lineErr(n, "method", "invalid_method", "Invalid value for 'method': only POST is supported."))
			continue
		}
		url, ok := mapString(obj, "url")
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
		if seen[customID] {
			addErr(lineErr(n, "custom_id", "duplicate_custom_id",
				"The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch."))
			continue
		}
		seen[customID] = true
		r := mapRequest{customID: customID, body: body, promptTokens: estimateTokens(mapPromptChars(endpoint, body))}
		in.tokens += r.promptTokens
		in.reqs = append(in.reqs, r)
	}
	if len(in.errs) > 0 {
		return mapInput{errs: in.errs}
	}
	return in
}

func mapString(obj map[string]json.RawMessage, key string) (string, bool) {
	var s string
	if err := json.Unmarshal(obj[key], &s); err != nil || s == "" {
		return "", false
	}
	return s, true
}

func mapPromptChars(endpoint string, body map[string]any) int {
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
		n += mapTextLen(body[f])
	}
	return n
}

func mapTextLen(v any) int {
	switch v := v.(type) {
	case string:
		return len(v)
	case float64:
		return 4
	case []any:
		n := 0
		for _, e := range v {
			n += mapTextLen(e)
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range v {
			switch strings.ToLower(k) {
			case "role", "type", "id", "detail", "name", "status", "format":
				continue
			}
			n += mapTextLen(e)
		}
		return n
	}
	return 0
}

func mapIntParam(body map[string]any, key string, def, hi int) int {
	f, ok := body[key].(float64)
	if !ok || f < 1 {
		return def
	}
	return int(min(f, float64(hi)))
}

func mapEmbeddingInputs(v any) int {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return 1
	}
	if _, isNum := arr[0].(float64); isNum {
		return 1
	}
	return len(arr)
}
