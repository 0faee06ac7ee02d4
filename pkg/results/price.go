package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
)

// Price is a model's standard (non-batch) price in USD per 1M tokens.
type Price struct {
	InputPerMTok  float64 `json:"input_per_mtok"`
	OutputPerMTok float64 `json:"output_per_mtok"`
}

// PriceTable estimates what usage costs on the batch lane.
type PriceTable struct {
	// Models maps a model name (without a date suffix) to its standard price.
	Models map[string]Price `json:"models"`
	// BatchDiscount is the batch lane's discount on standard prices:
	// 0.5 = 50% off. Must be in [0, 1].
	BatchDiscount float64 `json:"batch_discount"`
}

// DefaultBatchDiscount is the published batch discount of OpenAI's Batch
// API and of Anthropic's Message Batches alike.
const DefaultBatchDiscount = 0.5

// DefaultPriceTable returns the built-in table: an ESTIMATE from OpenAI's
// and Anthropic's published standard (synchronous) prices (USD per 1M
// tokens, 2025), not a bill. Prices change; set PRICE_TABLE to correct or
// extend them.
func DefaultPriceTable() PriceTable {
	return PriceTable{
		BatchDiscount: DefaultBatchDiscount,
		Models: map[string]Price{
			"gpt-4o-mini":            {0.15, 0.60},
			"gpt-4o":                 {2.50, 10.00},
			"gpt-4.1":                {2.00, 8.00},
			"gpt-4.1-mini":           {0.40, 1.60},
			"gpt-4.1-nano":           {0.10, 0.40},
			"text-embedding-3-small": {0.02, 0},
			"text-embedding-3-large": {0.13, 0},
			"text-embedding-ada-002": {0.10, 0},
			// Anthropic (cache writes and reads are not modelled).
			"claude-opus-4-1":   {15.00, 75.00},
			"claude-sonnet-4-5": {3.00, 15.00},
			"claude-sonnet-4":   {3.00, 15.00},
			"claude-haiku-4-5":  {1.00, 5.00},
			"claude-3-5-haiku":  {0.80, 4.00},
		},
	}
}

// ParsePriceTable reads PRICE_TABLE: a JSON object
//
//	{"batch_discount": 0.5, "models": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}}
//
// whose models add to or replace those of DefaultPriceTable, and whose
// batch_discount, when present, replaces DefaultBatchDiscount. An empty s
// yields the default table. Unknown fields, negative or non-finite prices
// and a discount outside [0, 1] are errors.
func ParsePriceTable(s string) (PriceTable, error) {
	p := DefaultPriceTable()
	if len(bytes.TrimSpace([]byte(s))) == 0 {
		return p, nil
	}
	var in struct {
		Models        map[string]Price `json:"models"`
		BatchDiscount *float64         `json:"batch_discount"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return PriceTable{}, fmt.Errorf("parse PRICE_TABLE: %w", err)
	}
	if dec.More() {
		return PriceTable{}, errors.New("parse PRICE_TABLE: trailing data after the JSON object")
	}
	maps.Copy(p.Models, in.Models)
	if in.BatchDiscount != nil {
		p.BatchDiscount = *in.BatchDiscount
	}
	if err := p.Validate(); err != nil {
		return PriceTable{}, fmt.Errorf("parse PRICE_TABLE: %w", err)
	}
	return p, nil
}

// Validate checks that prices are finite and not negative and that the
// discount is in [0, 1].
func (p PriceTable) Validate() error {
	if math.IsNaN(p.BatchDiscount) || p.BatchDiscount < 0 || p.BatchDiscount > 1 {
		return fmt.Errorf("batch_discount %v is not in [0, 1]", p.BatchDiscount)
	}
	for model, pr := range p.Models {
		if model == "" {
			return errors.New("empty model name")
		}
		for _, v := range []float64{pr.InputPerMTok, pr.OutputPerMTok} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return fmt.Errorf("model %q: price %v is not a finite non-negative number", model, v)
			}
		}
	}
	return nil
}

// dateSuffix is the snapshot suffix of model names: OpenAI's
// gpt-4o-mini-2024-07-18, Anthropic's claude-sonnet-4-5-20250929.
var dateSuffix = regexp.MustCompile(`-(\d{4}-\d{2}-\d{2}|\d{8})$`)

// Lookup finds model's price: by its exact name, else without its date
// suffix ("gpt-4o-2024-08-06" -> "gpt-4o", "claude-sonnet-4-5-20250929" ->
// "claude-sonnet-4-5").
func (p PriceTable) Lookup(model string) (Price, bool) {
	if pr, ok := p.Models[model]; ok {
		return pr, true
	}
	if base := dateSuffix.ReplaceAllString(model, ""); base != model {
		pr, ok := p.Models[base]
		return pr, ok
	}
	return Price{}, false
}

// Cost estimates the batch-lane cost of u on model in USD: standard price
// times (1 - BatchDiscount). known is false (and usd 0) when the model is
// not in the table. Cached-input and reasoning-token rates are not
// modelled: this is an estimate.
func (p PriceTable) Cost(model string, u Usage) (usd float64, known bool) {
	pr, ok := p.Lookup(model)
	if !ok {
		return 0, false
	}
	std := (float64(u.InputTokens)*pr.InputPerMTok + float64(u.OutputTokens)*pr.OutputPerMTok) / 1e6
	return std * (1 - p.BatchDiscount), true
}
