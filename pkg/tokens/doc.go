// Package tokens estimates a request body's input tokens offline, for
// packing requests into batches and for the per-model enqueued token
// budget (ENQUEUED_TOKEN_LIMITS).
//
// For OpenAI models (gpt-*, chatgpt-*, o1*, o3*, o4*, text-embedding-*,
// fine-tunes ft:<base>:..., and the other models github.com/tiktoken-go/tokenizer
// knows) it counts the tokens of the text that is sent with the model's
// tiktoken encoding: o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and
// later gpt-* models, chatgpt-* and the o-series; cl100k_base for gpt-4,
// gpt-3.5 and the text-embedding-* models; the library's own mapping for
// older models. The vocabularies are compiled into the binary: nothing is
// downloaded at run time. What is counted, by body shape:
//
//   - messages (/v1/chat/completions): per message 3 tokens plus the tokens
//     of its string fields (role, content, name +1, ...; content as a
//     string or as text parts), plus 3 for the primed reply, as OpenAI's
//     cookbook counts; tools and functions are counted as their JSON text;
//   - input (/v1/embeddings, /v1/responses): a string, an array of strings
//     or of token arrays, or (responses) items counted like messages; the
//     responses instructions are counted like a system message;
//   - prompt (/v1/completions): a string, an array of strings or token
//     arrays.
//
// A non-text content part (an image, audio, a file) is counted by the
// byte rule on its JSON. A body of another shape, or not a JSON object,
// is counted by the byte rule on the whole body.
//
// For other models (claude-*, unknown names) it uses the byte rule:
// ceil(bytes / 3.5 × 1.1) of the body, a 10% margin over ~3.5 bytes a
// token.
//
// Tokenizing is some 30 times slower than checking a batch input line:
// BenchmarkEstimate measures about 100,000 ns per KB of a chat body with
// o200k_base and 85,000 ns per KB with cl100k_base (~10 MB/s on one core;
// ~1,100 allocations a KB, most of them the library's regexp matches),
// where the byte rule costs ~5 ns a body whatever its size. So a batch
// input file is not tokenized line by line: a Tally estimates many
// requests from a sample (the first SampleHead of an encoding, then 1 in
// SampleEvery) scaled by their body bytes; intake, the submitter and the
// notifier's retry inputs use it. Estimate is for single requests (the
// packer's).
//
// Estimate is safe for concurrent use: the encoders are created once, on
// first use, and shared (their vocabularies are read only and their regexp
// is safe for concurrent use). A Tally is for one goroutine.
package tokens
