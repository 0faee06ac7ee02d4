package batchapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The provider's statuses map onto the contract's in one table.
func TestAnthropicStatusMapping(t *testing.T) {
	for _, c := range []struct {
		processing string
		cancel     bool
		expired    int64
		want       string
	}{
		{"in_progress", false, 0, contract.StatusInProgress},
		{"canceling", true, 0, contract.StatusCancelling},
		{"ended", false, 0, contract.StatusCompleted},
		{"ended", true, 0, contract.StatusCancelled},
		{"ended", true, 3, contract.StatusCancelled}, // a cancel wins over expiry
		{"ended", false, 2, contract.StatusExpired},
		{"something_new", false, 0, "something_new"},
	} {
		require.Equal(t, c.want, batchapi.AnthropicStatus(c.processing, c.cancel, c.expired), "%+v", c)
	}
	require.Equal(t, contract.Counts{Total: 10}, batchapi.AnthropicCounts(10, 0, 0, 0, 0), "zero until ended")
	require.Equal(t, contract.Counts{Total: 10, Completed: 6, Failed: 4}, batchapi.AnthropicCounts(0, 6, 2, 1, 1))
}

// Each result type maps onto an output-file line with the outcome the
// notifier acts on (golden file: testdata/anthropic_results.golden).
func TestAnthropicResultLinesGolden(t *testing.T) {
	in, err := os.ReadFile("testdata/anthropic_results.jsonl")
	require.NoError(t, err)
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(in))
	for sc.Scan() {
		l, err := batchapi.AnthropicLine(sc.Bytes())
		require.NoError(t, err)
		data, err := l.MarshalJSON()
		require.NoError(t, err)
		fmt.Fprintf(&out, "%s outcome=%s reason=%s\n", data, l.Outcome(), l.Reason())
	}
	const golden = "testdata/anthropic_results.golden"
	if *update {
		require.NoError(t, os.WriteFile(golden, out.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run with -update to create it")
	require.Equal(t, string(want), out.String())

	for _, bad := range []string{`{}`, `{"custom_id":"x","result":{"type":"weird"}}`, `not json`} {
		_, err := batchapi.AnthropicLine([]byte(bad))
		require.Error(t, err, bad)
	}
}

func TestJobTagCustomIDs(t *testing.T) {
	tag := batchapi.JobTag("eval-1:retry-2")
	require.Len(t, tag, 10)
	require.Equal(t, tag, batchapi.JobTag("eval-1:retry-2"), "deterministic")
	require.NotEqual(t, tag, batchapi.JobTag("eval-1"))
	id := batchapi.AnthropicCustomID(tag, 49999)
	require.True(t, batchapi.ValidAnthropicCustomID(id))
	gotTag, n, ok := batchapi.ParseAnthropicCustomID(id)
	require.True(t, ok)
	require.Equal(t, tag, gotTag)
	require.Equal(t, 49999, n)
	for _, bad := range []string{"producer-id", tag + "-x", "ABCDEFGHIJ-1"} {
		_, _, ok := batchapi.ParseAnthropicCustomID(bad)
		require.False(t, ok, bad)
	}
	require.False(t, batchapi.ValidAnthropicCustomID("has.dot"))
	require.False(t, batchapi.ValidAnthropicCustomID(strings.Repeat("a", 65)))
}

// The create body is the JSONL input turned into {"requests":[...]} as it
// is read: blank lines skipped, long lines whole, with or without a final
// newline.
func TestAnthropicCreateBodyStreams(t *testing.T) {
	long := `{"custom_id":"b","params":{"x":"` + strings.Repeat("y", 200<<10) + `"}}`
	for _, in := range []string{
		"{\"custom_id\":\"a\",\"params\":{}}\n\n" + long + "\n",
		"{\"custom_id\":\"a\",\"params\":{}}\n" + long,
	} {
		body := batchapi.RequestsBodyForTest(strings.NewReader(in))
		data, err := io.ReadAll(iotest1(body))
		require.NoError(t, err)
		var got struct {
			Requests []struct {
				CustomID string          `json:"custom_id"`
				Params   json.RawMessage `json:"params"`
			} `json:"requests"`
		}
		require.NoError(t, json.Unmarshal(data, &got))
		require.Len(t, got.Requests, 2)
		require.Equal(t, "a", got.Requests[0].CustomID)
		require.Equal(t, "b", got.Requests[1].CustomID)
		require.Len(t, got.Requests[1].Params, len(long)-len(`{"custom_id":"b","params":`)-1)
	}
}

// iotest1 reads one byte at a time, the least convenient reader.
func iotest1(r io.Reader) io.Reader { return oneByte{r} }

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}
