package results_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    results.Line
		wantErr string // substring; "" = no error
	}{
		{
			name: "success",
			in:   `{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"req_1","body":{"model":"m"}},"error":null}`,
			want: results.Line{ID: "batch_req_1", CustomID: "a", StatusCode: 200, RequestID: "req_1", Body: json.RawMessage(`{"model":"m"}`)},
		},
		{
			name: "body is compacted",
			in:   `{"custom_id":"a","response":{"status_code":200,"body":{ "model" : "m b",` + "\n" + `"x":[1, 2]}}}`,
			want: results.Line{CustomID: "a", StatusCode: 200, Body: json.RawMessage(`{"model":"m b","x":[1,2]}`)},
		},
		{
			name: "expired, no response",
			in:   `{"id":"batch_req_2","custom_id":"b","response":null,"error":{"code":"batch_expired","message":"expired"}}`,
			want: results.Line{ID: "batch_req_2", CustomID: "b", Error: &results.LineError{Code: "batch_expired", Message: "expired"}},
		},
		{
			name: "unknown fields are ignored",
			in:   `{"custom_id":"c","future":{"x":1},"response":{"status_code":500,"body":null,"extra":true},"error":null}`,
			want: results.Line{CustomID: "c", StatusCode: 500},
		},
		{name: "not JSON", in: `hello`, wantErr: "not a JSON object"},
		{name: "JSON array", in: `[1,2]`, wantErr: "not a JSON object"},
		{name: "truncated", in: `{"custom_id":"a","response":{"status_code":200`, wantErr: "not a JSON object"},
		{name: "two objects", in: `{"custom_id":"a","error":{}} {"custom_id":"b","error":{}}`, wantErr: "not a JSON object"},
		{name: "missing custom_id", in: `{"id":"x","response":{"status_code":200,"body":{}}}`, wantErr: "missing custom_id"},
		{name: "custom_id not a string", in: `{"custom_id":7,"error":{}}`, wantErr: "not a JSON object"},
		{name: "neither response nor error", in: `{"custom_id":"a","response":null,"error":null}`, wantErr: "neither response nor error"},
		{name: "response without status", in: `{"custom_id":"a","response":{"body":{}}}`, wantErr: "valid status_code"},
		{name: "status out of range", in: `{"custom_id":"a","response":{"status_code":42,"body":{}}}`, wantErr: "valid status_code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := results.ParseLine([]byte(tt.in))
			if tt.wantErr != "" {
				require.ErrorIs(t, err, results.ErrInvalidLine)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseLine (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLineDoesNotAlias(t *testing.T) {
	t.Parallel()
	in := []byte(okLine("a", 1, 2))
	l, err := results.ParseLine(in)
	require.NoError(t, err)
	want := string(l.Body)
	for i := range in {
		in[i] = 'x'
	}
	require.Equal(t, want, string(l.Body))
	require.Equal(t, "a", l.CustomID)
}

func TestLineMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		okLine("a", 3, 4),
		failLine("b", 400, "invalid_request_error", "invalid_value"),
		errLine("c", "batch_expired"),
		`{"custom_id":"<&>","response":{"status_code":200,"body":{"s":"<b>&amp;\u2028"}}}`,
	} {
		l, err := results.ParseLine([]byte(in))
		require.NoError(t, err)
		b, err := l.MarshalJSON()
		require.NoError(t, err)
		l2, err := results.ParseLine(b)
		require.NoError(t, err)
		if diff := cmp.Diff(l, l2); diff != "" {
			t.Fatalf("round trip of %s (-want +got):\n%s", in, diff)
		}
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300<<10) // far beyond bufio's and Scanner's 64 KiB
	in := okLine("a", 1, 1) + "\r\n" +
		"\n   \n" + // blank lines are skipped
		`{"custom_id":"long","response":{"status_code":200,"body":{"content":"` + long + `"}}}` + "\n" +
		errLine("c", "batch_expired") // no trailing newline

	var got []string
	// OneByteReader makes every read short, so lines cross buffer refills.
	err := results.Scan(iotest.OneByteReader(strings.NewReader(in)), func(l results.Line) error {
		got = append(got, l.CustomID)
		if l.CustomID == "long" {
			require.Len(t, l.Body, len(long)+len(`{"content":""}`))
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "long", "c"}, got)
}

func TestScanErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	in := okLine("a", 1, 1) + "\n\n" + `{"custom_id":"b","response":{"status_code":200,"body":` + "\n"
	err := results.Scan(strings.NewReader(in), func(results.Line) error { return nil })
	require.ErrorIs(t, err, results.ErrInvalidLine)
	require.ErrorContains(t, err, "line 3: ")

	stop := errors.New("stop here")
	err = results.Scan(strings.NewReader(okLine("a", 1, 1)+"\n"+okLine("b", 1, 1)), func(l results.Line) error {
		if l.CustomID == "b" {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.ErrorContains(t, err, "line 2: ")

	boom := errors.New("disk gone")
	err = results.Scan(io.MultiReader(strings.NewReader(okLine("a", 1, 1)+"\n"), iotest.ErrReader(boom)),
		func(results.Line) error { return nil })
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "line 2: read")
}

func TestScan50kLines(t *testing.T) {
	t.Parallel()
	const n = 50_000
	var buf bytes.Buffer
	for i := range n {
		buf.WriteString(okLine(fmt.Sprintf("req-%05d", i), 10, 5))
		buf.WriteByte('\n')
	}
	count := 0
	var m results.Merged
	require.NoError(t, results.Scan(&buf, func(l results.Line) error {
		count++
		m.Add(0, l)
		return nil
	}))
	require.Equal(t, n, count)
	completed, failed := m.Counts()
	require.Equal(t, n, completed)
	require.Zero(t, failed)
	kept, billed := m.Usage()
	require.Equal(t, results.Usage{InputTokens: 10 * n, OutputTokens: 5 * n, TotalTokens: 15 * n}, kept)
	require.Equal(t, kept, billed)
}
