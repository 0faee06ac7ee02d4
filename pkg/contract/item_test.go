package contract_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

func TestDecodeItemDefaults(t *testing.T) {
	it, id, err := contract.DecodeItem([]byte(`{"custom_id":"row-1","body":{"model":"gpt-4o-mini","messages":[]}}`))
	require.NoError(t, err)
	require.Equal(t, "row-1", id)
	require.Equal(t, contract.ProviderOpenAI, it.Provider)
	require.Equal(t, contract.DefaultEndpoint, it.Endpoint)
	require.Equal(t, "gpt-4o-mini", it.Model())

	it, _, err = contract.DecodeItem([]byte(`{"custom_id":"c_1","provider":"anthropic","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]},"metadata":{"row":"7"}}`))
	require.NoError(t, err)
	require.Equal(t, contract.AnthropicEndpoint, it.Endpoint, "anthropic's default endpoint")
	require.Equal(t, map[string]string{"row": "7"}, it.Metadata)
	require.Equal(t, "c_1:item", contract.ItemCompletedMsgID(it.CustomID))
}

func TestDecodeItemRules(t *testing.T) {
	body := `"body":{"model":"m"}`
	cases := []struct {
		name, msg, code, id string
	}{
		{"empty", ``, contract.CodeInvalidJSON, ""},
		{"not an object", `[1]`, contract.CodeInvalidJSON, ""},
		{"no custom_id", `{` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id with a dot", `{"custom_id":"a.b",` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id too long", `{"custom_id":"` + strings.Repeat("x", 65) + `",` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id of 64", `{"custom_id":"` + strings.Repeat("x", 64) + `",` + body + `}`, "", strings.Repeat("x", 64)},
		{"wrong type", `{"custom_id":"a","body":{"model":"m"},"metadata":[]}`, contract.CodeInvalidField, "a"},
		{"trailing data", `{"custom_id":"a",` + body + `} {}`, contract.CodeInvalidJSON, ""},
		{"bad provider", `{"custom_id":"a","provider":"x",` + body + `}`, contract.CodeInvalidField, "a"},
		{"bad endpoint", `{"custom_id":"a","endpoint":"/v1/nope",` + body + `}`, contract.CodeInvalidEndpoint, "a"},
		{"anthropic on a chat endpoint", `{"custom_id":"a","provider":"anthropic","endpoint":"/v1/chat/completions",` + body + `}`, contract.CodeInvalidEndpoint, "a"},
		{"body not an object", `{"custom_id":"a","body":"hi"}`, contract.CodeInvalidInput, "a"},
		{"no body", `{"custom_id":"a"}`, contract.CodeInvalidInput, "a"},
		{"no model", `{"custom_id":"a","body":{"messages":[]}}`, contract.CodeInvalidInput, "a"},
		{"reserved metadata", `{"custom_id":"a",` + body + `,"metadata":{"idempotency_key":"x"}}`, contract.CodeInvalidMetadata, "a"},
	}
	cases = append(cases, decodeCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, id, err := contract.DecodeItem([]byte(c.msg))
			require.Equal(t, c.id, id, "the custom_id usable for the answer")
			if c.code == "" {
				require.NoError(t, err)
				return
			}
			var ce *contract.Error
			require.True(t, errors.As(err, &ce), "%v", err)
			require.Equal(t, c.code, ce.Code, ce.Message)
		})
	}
}

func TestItemCompletedShape(t *testing.T) {
	ev := contract.ItemCompleted{CustomID: "a", Outcome: contract.OutcomeSucceeded, JobKey: "pack-x", BatchID: "batch_1",
		Response: &contract.ItemResponse{StatusCode: 200, Body: json.RawMessage(`{"id":"r"}`)}, Metadata: map[string]string{}}
	data, err := json.Marshal(ev)
	require.NoError(t, err)
	require.JSONEq(t, `{"custom_id":"a","outcome":"succeeded","response":{"status_code":200,"body":{"id":"r"}},"job_key":"pack-x","batch_id":"batch_1","metadata":{}}`, string(data))
}

// decodeCases are the inputs the one-pass decoder could get wrong; they
// also seed FuzzDecodeItem. code "" is a valid item.
var decodeCases = func() []struct{ name, msg, code, id string } {
	body := `"body":{"model":"m"}`
	deep := func(n int) string { // a body nesting n+2 deep in the message
		return `{"custom_id":"a","body":{"model":"m","x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}}`
	}
	return []struct{ name, msg, code, id string }{
		{"escaped custom_id", `{"custom_id":"\u0041b\u005F",` + body + `}`, "", "Ab_"},
		{"escaped custom_id not valid", `{"custom_id":"a\nb",` + body + `}`, contract.CodeInvalidInput, ""},
		{"escaped endpoint", `{"custom_id":"a","endpoint":"\/v1\/embeddings",` + body + `}`, "", "a"},
		{"escaped provider", `{"custom_id":"a","provider":"anthrop\u0069c",` + body + `}`, "", "a"},
		{"escaped key", `{"custom\u005fid":"a",` + body + `}`, "", "a"},
		{"custom_id a number", `{"custom_id":7,` + body + `}`, contract.CodeInvalidField, ""},
		{"custom_id null", `{"custom_id":null,` + body + `}`, contract.CodeInvalidInput, ""},
		{"provider a bool", `{"custom_id":"a","provider":true,` + body + `}`, contract.CodeInvalidField, "a"},
		{"endpoint an object", `{"custom_id":"a","endpoint":{},` + body + `}`, contract.CodeInvalidField, "a"},
		{"metadata value a number", `{"custom_id":"a",` + body + `,"metadata":{"k":1}}`, contract.CodeInvalidField, "a"},
		{"metadata value an object", `{"custom_id":"a",` + body + `,"metadata":{"k":{"x":"y"}}}`, contract.CodeInvalidField, "a"},
		{"metadata value null", `{"custom_id":"a",` + body + `,"metadata":{"k":null}}`, "", "a"},
		{"metadata null", `{"custom_id":"a",` + body + `,"metadata":null}`, "", "a"},
		{"metadata empty", `{"custom_id":"a",` + body + `,"metadata":{}}`, "", "a"},
		{"metadata a string", `{"custom_id":"a",` + body + `,"metadata":"k=v"}`, contract.CodeInvalidField, "a"},
		{"metadata escaped", `{"custom_id":"a",` + body + `,"metadata":{"k\"1":"\ud83d\ude00 \ud800 \ud800\u0041 \t\/"}}`, "", "a"},
		{"metadata invalid UTF-8", "{\"custom_id\":\"a\"," + body + ",\"metadata\":{\"k\xff\":\"v\xfe\xed\xa0\x80\"}}", "", "a"},
		{"body an array", `{"custom_id":"a","body":[{"model":"m"}]}`, contract.CodeInvalidInput, "a"},
		{"body a number", `{"custom_id":"a","body":1.5e3}`, contract.CodeInvalidInput, "a"},
		{"body null", `{"custom_id":"a","body":null}`, contract.CodeInvalidInput, "a"},
		{"body with an escaped model", `{"custom_id":"a","body":{"model":"\u006d","s":"\"}"}}`, "", "a"},
		{"body model not a string", `{"custom_id":"a","body":{"model":1}}`, contract.CodeInvalidInput, "a"},
		{"body model empty", `{"custom_id":"a","body":{"model":""}}`, contract.CodeInvalidInput, "a"},
		// Unknown fields are tolerated (strictUnmarshal), a producer on a
		// newer contract version is not refused.
		{"unknown field", `{"custom_id":"a",` + body + `,"priority":{"x":[1,2.5e-3,true,null]}}`, "", "a"},
		// Keys match as in encoding/json: case-insensitively (Unicode
		// simple folding) for the item, exactly for the returned id.
		{"key in capitals", `{"CUSTOM_ID":"a","Body":{"model":"m"},"PROVIDER":"anthropic"}`, "", ""},
		{"key with a long s", `{"cuſtom_id":"a",` + body + `}`, "", ""},
		// Duplicate keys: the last wins for the item (and metadata objects
		// merge), the first "custom_id" is the returned id.
		{"duplicate custom_id", `{"custom_id":"a","custom_id":"b",` + body + `}`, "", "a"},
		{"duplicate custom_id, the first invalid", `{"custom_id":"a.b","custom_id":"b",` + body + `}`, "", ""},
		{"duplicate custom_id, the last invalid", `{"custom_id":"a",` + body + `,"custom_id":"b.c"}`, contract.CodeInvalidInput, "a"},
		{"custom_id then null", `{"custom_id":"a","custom_id":null,` + body + `}`, "", "a"},
		{"custom_id a number then a string", `{"custom_id":1,"custom_id":"a",` + body + `}`, contract.CodeInvalidField, ""},
		{"duplicate body", `{"custom_id":"a","body":{"model":"m"},"body":{"x":1}}`, contract.CodeInvalidInput, "a"},
		{"duplicate metadata", `{"custom_id":"a",` + body + `,"metadata":{"k":"1","j":"2"},"metadata":{"k":"3"}}`, "", "a"},
		{"metadata then null", `{"custom_id":"a",` + body + `,"metadata":{"k":"1"},"metadata":null}`, "", "a"},
		{"metadata then an array", `{"custom_id":"a",` + body + `,"metadata":{"k":"1"},"metadata":[]}`, contract.CodeInvalidField, "a"},
		{"whitespace everywhere", " \n\t{ \"custom_id\" :\r\n \"a\" ,\n\t\"body\" : {\n  \"model\" : \"m\" ,\n  \"messages\" : [ ]\n } , \"metadata\" : { \"k\" : \"v\" } }\r\n", "", "a"},
		{"a string", `"a"`, contract.CodeInvalidJSON, ""},
		{"a number", `1`, contract.CodeInvalidJSON, ""},
		{"null", `null`, contract.CodeInvalidJSON, ""},
		{"blank", " \n\t", contract.CodeInvalidJSON, ""},
		{"not JSON", `{"custom_id":"a",` + body + `,}`, contract.CodeInvalidJSON, ""},
		{"trailing junk", `{"custom_id":"a",` + body + `}x`, contract.CodeInvalidJSON, ""},
		{"trailing brace", `{"custom_id":"a",` + body + `}}`, contract.CodeInvalidJSON, ""},
		// bytes.TrimSpace trims these, encoding/json does not.
		{"leading vertical tab", "\v{\"custom_id\":\"a\"," + body + "}", contract.CodeInvalidField, "a"},
		{"leading no-break space", "\u00a0{\"custom_id\":\"a\"," + body + "}", contract.CodeInvalidField, "a"},
		{"trailing form feed", "{\"custom_id\":\"a\"," + body + "}\f", contract.CodeInvalidField, "a"},
		{"trailing line separator", "{\"custom_id\":\"a\"," + body + "} \u2028\n", contract.CodeInvalidField, "a"},
		{"nested 10000 deep", deep(9998), "", "a"},
		{"nested 10001 deep", deep(9999), contract.CodeInvalidField, "a"},
	}
}()

// TestDecodeItemValues checks what the one-pass decoder fills in.
func TestDecodeItemValues(t *testing.T) {
	it, id, err := contract.DecodeItem([]byte(`{"custom_id":"\u0041b","endpoint":"\/v1\/embeddings","body" :  { "model" : "m" ,"x":"\u00e9"} ,"metadata":{"k\"":"\ud83d\ude00\ud800","n":null}}`))
	require.NoError(t, err)
	require.Equal(t, "Ab", id)
	require.Equal(t, contract.Item{CustomID: "Ab", Provider: contract.ProviderOpenAI, Endpoint: "/v1/embeddings",
		Body: json.RawMessage(`{ "model" : "m" ,"x":"\u00e9"}`), Metadata: map[string]string{`k"`: "\U0001F600\uFFFD", "n": ""}}, it)

	it, _, err = contract.DecodeItem([]byte(`{"custom_id":"a","body":{"model":"m"},"metadata":{}}`))
	require.NoError(t, err)
	require.NotNil(t, it.Metadata, "{} is an empty map, as encoding/json decodes it")
	require.Empty(t, it.Metadata)

	// A field of the wrong type: the rest is decoded, as by encoding/json
	// (the packer echoes the metadata in its refusal).
	it, id, err = contract.DecodeItem([]byte(`{"custom_id":"a","provider":1,"body":{"model":"m"},"metadata":{"k":"v","n":2}}`))
	var ce *contract.Error
	require.True(t, errors.As(err, &ce), "%v", err)
	require.Equal(t, contract.CodeInvalidField, ce.Code)
	require.Contains(t, ce.Message, "provider")
	require.Equal(t, "a", id)
	require.Equal(t, map[string]string{"k": "v", "n": ""}, it.Metadata)
}

// TestDecodeItemOwnsMemory: the caller may reuse data (a line reader's
// buffer) once DecodeItem returns.
func TestDecodeItemOwnsMemory(t *testing.T) {
	data := []byte(`{"custom_id":"row-1","provider":"openai","endpoint":"/v1/chat/completions","body":{"model":"gpt"},"metadata":{"team":"eval"}}`)
	it, id, err := contract.DecodeItem(data)
	require.NoError(t, err)
	for i := range data {
		data[i] = 'X'
	}
	require.Equal(t, "row-1", id)
	require.Equal(t, contract.Item{CustomID: "row-1", Provider: "openai", Endpoint: "/v1/chat/completions",
		Body: json.RawMessage(`{"model":"gpt"}`), Metadata: map[string]string{"team": "eval"}}, it)
}

func TestDecodeItemMatchesReference(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) { requireSameDecode(t, []byte(c.msg)) })
	}
	for _, msg := range []string{
		`{"custom_id":"row-1","body":{"model":"gpt-4o-mini","messages":[]}}`,
		`{"custom_id":"c_1","provider":"anthropic","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]},"metadata":{"row":"7"}}`,
		`{"custom_id":"a","body":{"model":"m"},"metadata":[]}`,
		`{"custom_id":"a","body":{"model":"m"}} {}`,
		`{"custom_id":"a","provider":"x","body":{"model":"m"}}`,
		`{"custom_id":"a","provider":"OpenAI","body":{"model":"m"}}`,
		`{"custom_id":"a","provider":"anthropic","endpoint":"/v1/chat/completions","body":{"model":"m"}}`,
		`{"custom_id":"a","body":{"model":"m"},"metadata":{"idempotency_key":"x"}}`,
		`{"custom_id":"a","body":{"model":"m"},"metadata":{"a":"1","b":2,"c":{"x":1},"d":[1],"e":true,"f":null,"g":"7"}}`,
		"{\"custom_id\":5,\"body\":{\"model\":\"m\"}}\v",
		"\v{\"custom_id\":5,\"body\":{\"model\":\"m\"}}",
		`{"custom_id":"a","body":{"model":"m"},"metadata":{"k":"` + strings.Repeat("v", 513) + `"}}`,
		`{"custom_id":"a","body":"{\"model\":\"m\"}"}`,
		`{"custom_id":"a","body":true,"body":{"model":"m"}}`,
		`{}`,
		`{"":""}`,
	} {
		requireSameDecode(t, []byte(msg))
	}
}

func FuzzDecodeItem(f *testing.F) {
	for _, c := range decodeCases {
		// The ~20 KB nesting cases would have the fuzzer spend its time
		// minimizing their offspring; TestDecodeItemMatchesReference has them.
		if len(c.msg) < 1<<10 {
			f.Add([]byte(c.msg))
		}
	}
	f.Add([]byte(`{"custom_id":"item-00001","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":64},"metadata":{"team":"eval"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		requireSameDecode(t, data)
		s := string(data)
		require.Equal(t, refItemIDRE.MatchString(s), contract.ValidItemID(s), "ValidItemID(%q)", s)
	})
}

// requireSameDecode checks that DecodeItem returns what the encoding/json
// decoder it replaced returned: the same item (defaults applied; the same
// partly decoded item after an error), the same id and the same error
// code. Error messages may differ.
func requireSameDecode(t testing.TB, data []byte) {
	t.Helper()
	want, wantID, wantErr := decodeItemReference(bytes.Clone(data))
	got, gotID, err := contract.DecodeItem(data)
	require.Equal(t, wantID, gotID, "id of %q", data)
	require.Equal(t, errorCode(t, wantErr), errorCode(t, err), "error of %q: want %v, got %v", data, wantErr, err)
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("item of %q:\nwant %#v\n got %#v", data, want, got)
	}
	// Validate, which both share, checks the model without Model's copy.
	var ce *contract.Error
	if errors.As(wantErr, &ce) && ce.Message == "body.model is required" {
		require.Empty(t, want.Model())
	} else if wantErr == nil {
		require.NotEmpty(t, want.Model())
	}
}

func errorCode(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ce *contract.Error
	require.True(t, errors.As(err, &ce), "%T %v", err, err)
	return ce.Code
}

var refItemIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// decodeItemReference is DecodeItem as it was before the one-pass gjson
// decoder: encoding/json on the Item struct (strictUnmarshal), ~10 µs an
// item.
func decodeItemReference(data []byte) (contract.Item, string, error) {
	var it contract.Item
	if len(bytes.TrimSpace(data)) == 0 {
		return it, "", contract.Errorf(contract.CodeInvalidJSON, "message is empty")
	}
	if t := bytes.TrimSpace(data); t[0] != '{' || !gjson.ValidBytes(t) {
		var v map[string]json.RawMessage
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("not an object")
		}
		return it, "", contract.Errorf(contract.CodeInvalidJSON, "message is not a JSON object: %v", err)
	}
	var id string
	if f := gjson.GetBytes(data, "custom_id"); f.Type == gjson.String && refItemIDRE.MatchString(f.Str) {
		id = f.Str
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&it); err != nil {
		return it, id, contract.Errorf(contract.CodeInvalidField, "decode request: %v", err)
	}
	if dec.More() {
		return it, id, contract.Errorf(contract.CodeInvalidField, "decode request: trailing data after the JSON object")
	}
	if err := it.Validate(); err != nil {
		return it, id, err
	}
	return it, id, nil
}
