package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Endpoints a batch may target. OpenAI also accepts /v1/images/generations,
// /v1/images/edits and /v1/videos; the emulator rejects those.
var batchEndpoints = []string{"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations"}

var unsupportedEndpoints = []string{"/v1/images/generations", "/v1/images/edits", "/v1/videos"}

// Metadata limits of OpenAI objects.
const (
	maxMetadataPairs    = 16
	maxMetadataKeyLen   = 64
	maxMetadataValueLen = 512
)

type createBatchRequest struct {
	InputFileID        *string         `json:"input_file_id"`
	Endpoint           *string         `json:"endpoint"`
	CompletionWindow   *string         `json:"completion_window"`
	Metadata           json.RawMessage `json:"metadata"`
	OutputExpiresAfter *struct {
		Anchor  string `json:"anchor"`
		Seconds int64  `json:"seconds"`
	} `json:"output_expires_after"`
}

// decodeCreate decodes and validates POST /v1/batches like OpenAI does.
func decodeCreate(r io.Reader) (createBatchRequest, map[string]string, *apiError) {
	var req createBatchRequest
	body, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return req, nil, invalid("", "invalid_request", "Read request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return req, nil, invalid(strings.Trim(field, `"`), "unknown_parameter", "Unrecognized request argument supplied: %s", strings.Trim(field, `"`))
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return req, nil, invalid(te.Field, "invalid_type", "Invalid type for '%s': expected %s.", te.Field, te.Type)
		}
		return req, nil, invalid("", "invalid_json", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
	}
	for _, p := range []struct {
		name string
		v    *string
	}{{"input_file_id", req.InputFileID}, {"endpoint", req.Endpoint}, {"completion_window", req.CompletionWindow}} {
		if p.v == nil || *p.v == "" {
			return req, nil, invalid(p.name, "missing_required_parameter", "Missing required parameter: '%s'.", p.name)
		}
	}
	if ep := *req.Endpoint; slices.Contains(unsupportedEndpoints, ep) {
		return req, nil, invalid("endpoint", "invalid_value", "The emulator does not support batches for endpoint '%s'.", ep)
	} else if !slices.Contains(batchEndpoints, ep) {
		return req, nil, invalid("endpoint", "invalid_value", "Invalid value: '%s'. Supported values are: '%s'.",
			ep, strings.Join(append(slices.Clone(batchEndpoints), unsupportedEndpoints...), "', '"))
	}
	if w := *req.CompletionWindow; w != "24h" {
		return req, nil, invalid("completion_window", "invalid_value", "Invalid value: '%s'. Supported values are: '24h'.", w)
	}
	if oea := req.OutputExpiresAfter; oea != nil {
		if oea.Anchor != "created_at" {
			return req, nil, invalid("output_expires_after.anchor", "invalid_value", "Invalid value: '%s'. Supported values are: 'created_at'.", oea.Anchor)
		}
		if oea.Seconds < 3600 || oea.Seconds > 2592000 {
			return req, nil, invalid("output_expires_after.seconds", "invalid_value",
				"Invalid 'output_expires_after.seconds': expected a value between 3600 and 2592000, but got %d instead.", oea.Seconds)
		}
	}
	md, aerr := decodeMetadata(req.Metadata)
	return req, md, aerr
}

// decodeMetadata checks OpenAI's metadata rules: at most 16 string pairs,
// keys up to 64 and values up to 512 characters. Absent or null is nil.
func decodeMetadata(raw json.RawMessage) (map[string]string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("metadata", "invalid_type", "Invalid type for 'metadata': expected an object.")
	}
	if len(m) > maxMetadataPairs {
		return nil, invalid("metadata", "object_above_max_properties",
			"Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got an object with %d properties instead.", maxMetadataPairs, len(m))
	}
	md := make(map[string]string, len(m))
	for k, v := range m {
		if n := utf8.RuneCountInString(k); n > maxMetadataKeyLen {
			return nil, invalid("metadata", "string_above_max_length",
				"Invalid 'metadata': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", maxMetadataKeyLen, n)
		}
		s, ok := v.(string)
		if !ok {
			return nil, invalid("metadata."+k, "invalid_type", "Invalid type for 'metadata.%s': expected a string.", k)
		}
		if n := utf8.RuneCountInString(s); n > maxMetadataValueLen {
			return nil, invalid("metadata."+k, "string_above_max_length",
				"Invalid 'metadata.%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", k, maxMetadataValueLen, n)
		}
		md[k] = s
	}
	return md, nil
}

func (e *Emulator) handleCreateBatch(c *call) {
	req, md, aerr := decodeCreate(c.r.Body)
	if aerr != nil {
		c.fail(aerr)
		return
	}
	e.mu.Lock()
	f, ok := e.files[*req.InputFileID]
	e.mu.Unlock()
	if !ok {
		c.fail(notFound("input_file_id", "file_not_found", "No such File object: %s", *req.InputFileID))
		return
	}
	if f.Purpose != "batch" {
		c.fail(invalid("input_file_id", "invalid_file_purpose",
			"The input file %s must be uploaded with purpose 'batch', not '%s'.", f.ID, f.Purpose))
		return
	}
	in := parseInput(&f.data, *req.Endpoint) // outside the lock: up to 50k lines

	e.mu.Lock()
	now := e.clock.Now()
	e.runDueLocked(now)
	b := &batch{
		id: newBatchID(), endpoint: *req.Endpoint, inputFileID: f.ID, window: *req.CompletionWindow,
		metadata: md, created: now, in: in, data: f.data, seq: len(e.batches), ord: e.nextOrd(),
	}
	if req.OutputExpiresAfter != nil {
		b.outputExpiresAfter = req.OutputExpiresAfter.Seconds
	}
	if lim := e.cfg.EnqueuedTokenLimit; lim > 0 && b.valid() {
		if e.enqueued[in.model]+in.tokens > lim {
			b.in = input{errs: []BatchError{{Code: "token_limit_exceeded", Message: "Enqueued token limit reached for " +
				in.model + " in organization org-emulator. Limit: " + strconv.FormatInt(lim, 10) +
				" enqueued tokens. Please try submitting an equal or smaller batch once some of your in-progress batches have completed."}}}
		} else {
			e.enqueued[in.model] += in.tokens
			b.countsTokens = true
		}
	}
	b.plan(e.cfg, e.rnd)
	e.batches = append(e.batches, b)
	e.byID[b.id] = b
	e.created++
	e.active++
	e.maxActive = max(e.maxActive, e.active)
	e.schedule(b)
	view := e.viewLocked(b, now)
	e.mu.Unlock()
	c.batchID = b.id
	e.log.Debug().Str("batch_id", b.id).Int("requests", b.total).Msg("batch created")

	if e.dropAfterCreate() {
		e.dropConn(c)
		return
	}
	c.json(http.StatusOK, view)
}

// statusDropped logs a create whose connection was closed without an answer.
const statusDropped = 0

// dropConn closes c's connection without an answer, as a network failure
// after the vendor committed would. The call is logged first: the client
// sees the connection close, and a test reading the log then finds it.
func (e *Emulator) dropConn(c *call) {
	c.status = statusDropped
	e.calls.add(c, time.Now())
	c.logged = true
	if hj, ok := c.w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // HTTP/2 or a wrapped writer: abort the stream
}

func (e *Emulator) dropAfterCreate() bool {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.faults.DropAfterCreateRate > 0 && e.frnd.Float64() < e.faults.DropAfterCreateRate
}

func errNoBatch(id string) *apiError {
	return notFound("id", "batch_not_found", "No such Batch object: %s", id)
}

func (e *Emulator) handleGetBatch(c *call) {
	e.mu.Lock()
	now := e.clock.Now()
	e.runDueLocked(now)
	b, ok := e.byID[c.batchID]
	if !ok {
		e.mu.Unlock()
		c.fail(errNoBatch(c.batchID))
		return
	}
	e.advanceLocked(b, now)
	view := e.viewLocked(b, now)
	e.mu.Unlock()
	c.json(http.StatusOK, view)
}

// handleCancelBatch moves a validating or in_progress batch to cancelling;
// it becomes cancelled CancelDelay later. Cancelling again is a no-op;
// any other status is an error.
func (e *Emulator) handleCancelBatch(c *call) {
	e.mu.Lock()
	now := e.clock.Now()
	e.runDueLocked(now)
	b, ok := e.byID[c.batchID]
	if !ok {
		e.mu.Unlock()
		c.fail(errNoBatch(c.batchID))
		return
	}
	e.advanceLocked(b, now)
	switch st := b.statusAt(now); st {
	case StatusValidating, StatusInProgress:
		b.cancelAt, b.cancelledAt = now, now.Add(e.cfg.CancelDelay)
		b.terminalAt = b.cancelledAt
		e.schedule(b)
	case StatusCancelling:
	default:
		e.mu.Unlock()
		c.fail(invalid("", "", "Cannot cancel a batch with status '%s'.", st))
		return
	}
	view := e.viewLocked(b, now)
	e.mu.Unlock()
	c.json(http.StatusOK, view)
}

// parseLimit parses a list limit within [1,hi], def when absent.
func parseLimit(s string, def, hi int) (int, *apiError) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return 0, invalid("limit", "invalid_type", "Invalid 'limit': expected an integer, but got '%s' instead.", s)
	case n < 1:
		return 0, invalid("limit", "integer_below_min_value", "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got %d instead.", n)
	case n > hi:
		return 0, invalid("limit", "integer_above_max_value", "Invalid 'limit': integer above maximum value. Expected a value <= %d, but got %d instead.", hi, n)
	}
	return n, nil
}

// handleListBatches lists batches newest first, after the cursor batch.
func (e *Emulator) handleListBatches(c *call) {
	q := c.r.URL.Query()
	limit, aerr := parseLimit(q.Get("limit"), 20, 100)
	if aerr != nil {
		c.fail(aerr)
		return
	}
	e.mu.Lock()
	now := e.clock.Now()
	e.runDueLocked(now)
	start := len(e.batches) - 1
	if after := q.Get("after"); after != "" {
		start = -1 // an unknown cursor lists nothing
		if b, ok := e.byID[after]; ok {
			start = b.seq - 1
		}
	}
	data := make([]batchJSON, 0, limit)
	i := start
	for ; i >= 0 && len(data) < limit; i-- {
		b := e.batches[i]
		e.advanceLocked(b, now)
		data = append(data, e.viewLocked(b, now))
	}
	e.mu.Unlock()
	c.json(http.StatusOK, listPage(data, i >= 0, func(v batchJSON) string { return v.ID }))
}
