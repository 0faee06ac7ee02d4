package results_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func TestParsePriceTable(t *testing.T) {
	t.Parallel()
	def := results.DefaultPriceTable()
	p, err := results.ParsePriceTable("  ")
	require.NoError(t, err)
	require.Equal(t, def, p)

	p, err = results.ParsePriceTable(`{"batch_discount":0,"models":{"gpt-4o":{"input_per_mtok":5,"output_per_mtok":15},"my-model":{"input_per_mtok":1}}}`)
	require.NoError(t, err)
	require.Zero(t, p.BatchDiscount)
	require.Equal(t, results.Price{InputPerMTok: 5, OutputPerMTok: 15}, p.Models["gpt-4o"])
	require.Equal(t, results.Price{InputPerMTok: 1}, p.Models["my-model"])
	require.Equal(t, def.Models["gpt-4o-mini"], p.Models["gpt-4o-mini"], "defaults are kept")

	p, err = results.ParsePriceTable(`{"models":{}}`)
	require.NoError(t, err)
	require.Equal(t, results.DefaultBatchDiscount, p.BatchDiscount, "absent discount keeps the default")

	for _, bad := range []string{
		`nope`,
		`{"models":{"m":{"input":1}}}`,
		`{"modles":{}}`,
		`{"batch_discount":1.5}`,
		`{"batch_discount":-0.1}`,
		`{"models":{"m":{"input_per_mtok":-1}}}`,
		`{"models":{"":{"input_per_mtok":1}}}`,
		`{} {}`,
	} {
		_, err := results.ParsePriceTable(bad)
		require.Error(t, err, bad)
		require.ErrorContains(t, err, "PRICE_TABLE")
	}
}

func TestCost(t *testing.T) {
	t.Parallel()
	p := results.DefaultPriceTable()
	u := results.Usage{InputTokens: 1_000_000, OutputTokens: 2_000_000, TotalTokens: 3_000_000}
	tests := []struct {
		model string
		usd   float64
		known bool
	}{
		{"gpt-4o-mini", (0.15 + 2*0.60) * 0.5, true},
		{"gpt-4o-mini-2024-07-18", (0.15 + 2*0.60) * 0.5, true},
		{"gpt-4o-2024-08-06", (2.50 + 2*10.00) * 0.5, true},
		{"gpt-4.1-mini", (0.40 + 2*1.60) * 0.5, true},
		{"text-embedding-3-small", 0.02 * 0.5, true},
		{"gpt-4o-mini-tts", 0, false}, // not a date suffix: no prefix guessing
		{"unknown", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		usd, known := p.Cost(tt.model, u)
		require.Equal(t, tt.known, known, tt.model)
		require.InDelta(t, tt.usd, usd, 1e-12, tt.model)
	}
	p.BatchDiscount = 0
	usd, _ := p.Cost("gpt-4o", results.Usage{InputTokens: 1_000_000})
	require.InDelta(t, 2.50, usd, 1e-12)
}
