package results

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// decodeRecordReference is how readRecords decoded a line before
// decodeRecord: decodeRecord must give the same record and error.
func decodeRecordReference(b []byte) (record, error) {
	var r record
	err := json.Unmarshal(b, &r)
	return r, err
}

// requireSameDecode checks decodeRecord(b) against decodeRecordReference.
func requireSameDecode(t *testing.T, b []byte) {
	t.Helper()
	in := string(b)
	want, wantErr := decodeRecordReference(b)
	got, err := decodeRecord(b)
	require.Equal(t, in, string(b), "decodeRecord changed its input")
	require.Equal(t, want, got, "line %q", b)
	if wantErr == nil {
		require.NoError(t, err, "line %q", b)
		return
	}
	require.Error(t, err, "line %q", b)
	require.ErrorIs(t, err, ErrInvalidLine)
	require.Equal(t, fmt.Errorf("%w: not a JSON object: %w", ErrInvalidLine, wantErr).Error(), err.Error())
}

var decodeRecordLines = []string{
	// typical lines
	string(benchRecordLine),
	`{"custom_id":"a","status":"succeeded","attempt":0,"status_code":200,"body":{"id":"x"}}`,
	`{"custom_id":"a","status":"failed","attempt":2,"status_code":0,"error":{"code":"batch_expired","message":"expired"},"reason":"batch_expired"}`,
	`{"custom_id":"a","status":"failed","attempt":1,"status_code":429,"body":{"error":{"message":"slow down"}},"reason":"http 429","batch_request_id":"br","request_id":"rq"}`,
	// nulls
	`{"custom_id":null,"status":null,"attempt":null,"status_code":null,"body":null,"error":null,"reason":null,"batch_request_id":null,"request_id":null}`,
	`{"custom_id":"a","custom_id":null,"attempt":3,"attempt":null,"status_code":200,"status_code":null}`,
	`{"error":{"code":"x"},"error":null}`,
	`{"error":{"code":null,"message":null}}`,
	`{"body":{"a":1},"body":null}`,
	// escapes
	`{"custom_id":"a\"b\\c\/d\n\t\u00e9\ud83d\ude00"}`,
	`{"custom_id":"\ud800"}`,
	`{"custom_id":"\udc00\ud800x"}`,
	`{"custom_id":"é€😀"}`,
	"{\"custom_id\":\"\xff\xfe\"}",
	"{\"custom_id\":\"a\xc3\"}",
	`{"custom\u005fid":"a"}`,
	`{"\u0063ustom_id":"a","status":"x"}`,
	`{"error":{"co\u0064e":"x"}}`,
	`{"error":{"code":"\u0041\n"}}`,
	// body shapes
	`{"body":[1,2,{"a":[]}]}`,
	`{"body":"a string \" \\ \u00e9"}`,
	`{"body":12.5e3}`,
	`{"body":-0}`,
	`{"body":true}`,
	`{"body":false}`,
	`{"body":{}}`,
	`{"body":[]}`,
	`{"body" : { "a" : [ 1 , 2 ] , "b" : null } , "custom_id" : "a" }`,
	"{\"body\":\t{\"a\":\n1}\r,\"x\":1}",
	"{\"body\":1\t,\"x\":1}",
	"{\"body\":1\n}",
	`{"body":{"a":1},"body":[2]}`,
	`{"body":{"a":1},"body":"zz"}`,
	`{"body":{"a":1},"body":{"bb":2}}`,
	// error object
	`{"error":{"code":"c","message":"m","param":null,"type":"t"}}`,
	`{"error":{"code":"c"},"error":{"message":"m"}}`,
	`{"error":{"code":"c"},"error":{}}`,
	`{"error":{}}`,
	`{"error":"batch_expired"}`,
	`{"error":[]}`,
	`{"error":1}`,
	`{"error":true}`,
	`{"error":{"code":1}}`,
	`{"error":{"code":"c","message":{"x":1}}}`,
	`{"error":{"CODE":"c"}}`,
	`{"error":{"Message":"m","message":"n"}}`,
	`{"error":{"codE":"c","code":"d"}}`,
	// attempt and status_code numbers
	`{"attempt":1.0}`,
	`{"attempt":1.5}`,
	`{"attempt":1e2}`,
	`{"attempt":1E2}`,
	`{"attempt":-1}`,
	`{"attempt":-0}`,
	`{"attempt":9223372036854775807}`,
	`{"attempt":9223372036854775808}`,
	`{"attempt":-9223372036854775808}`,
	`{"attempt":-9223372036854775809}`,
	`{"attempt":99999999999999999999999999}`,
	`{"attempt":"1"}`,
	`{"attempt":true}`,
	`{"attempt":[1]}`,
	`{"attempt":{}}`,
	`{"status_code":200.0,"custom_id":"a"}`,
	`{"status_code":"200","custom_id":"a"}`,
	`{"custom_id":1}`,
	`{"custom_id":true,"status":"ok"}`,
	`{"custom_id":["a"]}`,
	`{"status":{}}`,
	`{"reason":false}`,
	// missing fields
	`{}`,
	`{"custom_id":"a"}`,
	`{"status_code":200}`,
	// duplicate keys
	`{"custom_id":"a","custom_id":"b"}`,
	`{"attempt":1,"attempt":2}`,
	`{"status":"succeeded","status":"failed"}`,
	// case-variant keys
	`{"Custom_ID":"a"}`,
	`{"custom_id":"a","CUSTOM_ID":"b"}`,
	`{"CUSTOM_ID":"b","custom_id":"a"}`,
	`{"Attempt":3}`,
	`{"BODY":{"a":1}}`,
	`{"Error":{"code":"x"}}`,
	`{"ſtatus":"x"}`,
	`{"error":{"meſſage":"x"}}`,
	`{"reaſon":"x"}`,
	`{"custom_ıd":"x"}`,
	`{"custom_İd":"x"}`,
	// unknown keys
	`{"custom_id":"a","extra":{"custom_id":"b"},"x":[1,2],"y":null,"z":"w"}`,
	`{"customid":"a","custom-id":"b","custom_id ":"c"}`,
	`{"é":1,"custom_id":"a"}`,
	`{"":1}`,
	// whitespace
	" \t\r\n{ \"custom_id\" : \"a\" , \"attempt\" :\t1 } \r\n",
	"{\"custom_id\":\"a\"}\n",
	"{\"custom_id\":\"a\"}\r\n",
	// non-object values
	`null`,
	`1`,
	`-1.5`,
	`"custom_id"`,
	`true`,
	`false`,
	`[]`,
	`[{"custom_id":"a"}]`,
	// invalid JSON
	`{`,
	`}`,
	`{"custom_id":}`,
	`{"custom_id":"a",}`,
	`{"custom_id":"a" "status":"b"}`,
	`{"custom_id":'a'}`,
	`{custom_id:"a"}`,
	`{"attempt":01}`,
	`{"attempt":+1}`,
	`{"attempt":1.}`,
	`{"attempt":.5}`,
	`{"attempt":1e}`,
	`{"attempt":-}`,
	`{"attempt":NaN}`,
	`{"attempt":Infinity}`,
	`{"body":nul}`,
	`{"body":nulll}`,
	`{"body":tru}`,
	"{\"custom_id\":\"a\tb\"}",
	"{\"custom_id\":\"a\x00\"}",
	`{"custom_id":"\x"}`,
	`{"custom_id":"\u12"}`,
	`{"custom_id":"a`,
	"\x00{}",
	"{}\x00",
	"\u00a0{}",
	"\v{}",
	"\f{}",
	// trailing garbage
	`{"custom_id":"a"}x`,
	`{"custom_id":"a"}{}`,
	`{"custom_id":"a"} 1`,
	`{"custom_id":"a"}}`,
	`{"custom_id":"a"},`,
	// nesting
	`{"body":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
	`{"body":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"body":` + strings.Repeat(`{"a":`, 9999) + "1" + strings.Repeat("}", 9999) + `}`,
	`{"body":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000) + `}`,
	`{"body":"` + strings.Repeat("[", 20000) + `"}`,
}

func TestDecodeRecordMatchesEncodingJSON(t *testing.T) {
	for _, line := range decodeRecordLines {
		name := line
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			requireSameDecode(t, []byte(line))
		})
	}
}

// TestDecodeRecordDoesNotAlias checks that a decoded record keeps nothing
// of the line: ScanLines reuses its buffer.
func TestDecodeRecordDoesNotAlias(t *testing.T) {
	b := []byte(`{"custom_id":"a","status":"succeeded","attempt":0,"status_code":200,"body":{"x":"y"},"error":{"code":"c","message":"m"},"reason":"r","batch_request_id":"br","request_id":"rq"}`)
	rec, err := decodeRecord(b)
	require.NoError(t, err)
	want, err := decodeRecordReference(b)
	require.NoError(t, err)
	for i := range b {
		b[i] = 'X'
	}
	require.Equal(t, want, rec)
}

func FuzzDecodeRecord(f *testing.F) {
	for _, line := range decodeRecordLines {
		if len(line) < 1000 { // the deep-nesting lines make minimizing crawl
			f.Add([]byte(line))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		requireSameDecode(t, b)
	})
}

// TestDecodeRecordFastPath checks that the lines the fleet writes do not
// fall back to json.Unmarshal.
func TestDecodeRecordFastPath(t *testing.T) {
	for _, line := range decodeRecordLines[:9] {
		_, ok := decodeRecordFast([]byte(line))
		require.True(t, ok, "line %q", line)
	}
	for _, line := range []string{`{"Custom_ID":"a"}`, `{"custom_id":"\u0041"}`, `{"attempt":1.0}`, `[]`, `{"a":1`} {
		_, ok := decodeRecordFast([]byte(line))
		require.False(t, ok, "line %q", line)
	}
}
