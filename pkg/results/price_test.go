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
		// Anthropic: synchronous list prices, the same 50% batch discount.
		{"claude-sonnet-4-5", (3 + 2*15) * 0.5, true},
		{"claude-sonnet-4-5-20250929", (3 + 2*15) * 0.5, true},
		{"claude-sonnet-4-20250514", (3 + 2*15) * 0.5, true},
		{"claude-opus-4-1-20250805", (15 + 2*75) * 0.5, true},
		{"claude-haiku-4-5-20251001", (1 + 2*5) * 0.5, true},
		{"claude-3-5-haiku-20241022", (0.80 + 2*4) * 0.5, true},
		{"claude-sonnet-4-5-latest", 0, false}, // an alias, not a date suffix
		{"claude-opus-4", 0, false},            // exact names: not claude-opus-4-1's price
		{"claude-sonnet-4-5-2025092", 0, false},
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

// A Claude job's usage (Anthropic's input_tokens/output_tokens) costs half
// the synchronous price, and PRICE_TABLE can correct a Claude price.
func TestCostOfAClaudeModel(t *testing.T) {
	t.Parallel()
	p := results.DefaultPriceTable()
	pr, ok := p.Lookup("claude-sonnet-4-5-20250929")
	require.True(t, ok)
	require.Equal(t, results.Price{InputPerMTok: 3, OutputPerMTok: 15}, pr)
	usd, known := p.Cost("claude-sonnet-4-5", results.Usage{InputTokens: 2_000, OutputTokens: 500})
	require.True(t, known)
	require.InDelta(t, (2_000*3.0+500*15.0)/1e6*0.5, usd, 1e-15) // $0.00675
	require.InDelta(t, 0.00675, usd, 1e-15)

	p, err := results.ParsePriceTable(`{"models":{"claude-haiku-4-5":{"input_per_mtok":2,"output_per_mtok":10}}}`)
	require.NoError(t, err)
	usd, known = p.Cost("claude-haiku-4-5-20251001", results.Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000})
	require.True(t, known)
	require.InDelta(t, 6.0, usd, 1e-12)
}
