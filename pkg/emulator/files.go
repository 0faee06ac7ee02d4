package emulator

import (
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// defaultBatchFileTTL is OpenAI's default expiry of batch files: 30 days.
// The emulator reports it in expires_at but never deletes a file by itself.
const defaultBatchFileTTL = 30 * 24 * 3600

// uploadPurposes are the purposes POST /v1/files accepts.
var uploadPurposes = []string{"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}

// file is OpenAI's FileObject plus its content.
type file struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
	data          content
}

type uploadForm struct {
	data              content
	filename, purpose string
	anchor, seconds   string
	hasFile           bool
}

func (e *Emulator) readUpload(r *http.Request) (uploadForm, *apiError) {
	var u uploadForm
	mr, err := r.MultipartReader()
	if err != nil {
		return u, invalid("", "invalid_request", "Expected a multipart/form-data body: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return u, invalid("", "invalid_request", "Malformed multipart body: %v", err)
		}
		// The request's Content-Length bounds the file part: reading it
		// into a buffer of that size never grows nor copies it.
		sizeHint := int64(-1)
		if part.FormName() == "file" {
			sizeHint = r.ContentLength
		}
		value, aerr := e.readPart(part, sizeHint)
		if aerr != nil {
			return u, aerr
		}
		switch part.FormName() {
		case "file":
			u.data, u.filename, u.hasFile = value, part.FileName(), true
		case "purpose":
			u.purpose = string(value.bytes())
		case "expires_after[anchor]":
			u.anchor = string(value.bytes())
		case "expires_after[seconds]":
			u.seconds = string(value.bytes())
		}
	}
	return u, nil
}

// readPart reads a part of at most MaxFileBytes; sizeHint is the most it
// can hold when known, -1 otherwise (see readContent).
func (e *Emulator) readPart(part *multipart.Part, sizeHint int64) (content, *apiError) {
	defer func() { _ = part.Close() }()
	b, tooLarge, err := readContent(part, sizeHint, e.cfg.MaxFileBytes)
	if err != nil {
		return content{}, invalid("", "invalid_request", "Read multipart body: %v", err)
	}
	if tooLarge {
		return content{}, newAPIError(http.StatusRequestEntityTooLarge, typeInvalidRequest, "file", "file_too_large",
			"File is larger than the maximum of %d bytes.", e.cfg.MaxFileBytes)
	}
	return b, nil
}

func (e *Emulator) handleUpload(c *call) {
	u, aerr := e.readUpload(c.r)
	if aerr != nil {
		c.fail(aerr)
		return
	}
	switch {
	case !u.hasFile:
		c.fail(invalid("file", "missing_required_parameter", "Missing required parameter: 'file'."))
		return
	case u.purpose == "":
		c.fail(invalid("purpose", "missing_required_parameter", "Missing required parameter: 'purpose'."))
		return
	case !slices.Contains(uploadPurposes, u.purpose):
		c.fail(invalid("purpose", "invalid_value", "Invalid value: '%s'. Supported values are: '%s'.",
			u.purpose, strings.Join(uploadPurposes, "', '")))
		return
	case u.purpose == "batch" && !strings.HasSuffix(strings.ToLower(u.filename), ".jsonl"):
		c.fail(invalid("file", "", "Invalid file format for Batch API. Must be .jsonl"))
		return
	}
	now := e.clock.Now()
	f := &file{
		ID: newFileID(), Object: "file", Bytes: u.data.size, CreatedAt: now.Unix(),
		Filename: u.filename, Purpose: u.purpose, Status: "processed", data: u.data,
	}
	if u.seconds != "" || u.anchor != "" {
		secs, err := strconv.ParseInt(u.seconds, 10, 64)
		if u.anchor != "created_at" || err != nil || secs < 3600 || secs > 2592000 {
			c.fail(invalid("expires_after", "invalid_value",
				"Invalid 'expires_after': anchor must be 'created_at' and seconds between 3600 and 2592000."))
			return
		}
		f.ExpiresAt = ptr(now.Unix() + secs)
	} else if u.purpose == "batch" {
		f.ExpiresAt = ptr(now.Unix() + defaultBatchFileTTL)
	}
	e.mu.Lock()
	e.files[f.ID] = f
	e.fileOrder = append(e.fileOrder, f)
	e.mu.Unlock()
	c.json(http.StatusOK, f)
}

func errNoFile(id string) *apiError {
	return notFound("id", "file_not_found", "No such File object: %s", id)
}

func (e *Emulator) lookupFile(id string) (*file, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runDueLocked(e.clock.Now()) // output files appear when batches finish
	f, ok := e.files[id]
	return f, ok
}

func (e *Emulator) handleGetFile(c *call) {
	f, ok := e.lookupFile(c.r.PathValue("id"))
	if !ok {
		c.fail(errNoFile(c.r.PathValue("id")))
		return
	}
	c.json(http.StatusOK, f)
}

func (e *Emulator) handleFileContent(c *call) {
	f, ok := e.lookupFile(c.r.PathValue("id"))
	if !ok {
		c.fail(errNoFile(c.r.PathValue("id")))
		return
	}
	c.status = http.StatusOK
	c.w.Header().Set("Content-Type", "application/octet-stream")
	c.w.Header().Set("Content-Length", strconv.FormatInt(f.data.size, 10))
	c.w.WriteHeader(http.StatusOK)
	_ = f.data.writeTo(c.w)
}

func (e *Emulator) handleDeleteFile(c *call) {
	id := c.r.PathValue("id")
	e.mu.Lock()
	_, ok := e.files[id]
	delete(e.files, id)
	e.mu.Unlock()
	if !ok {
		c.fail(errNoFile(id))
		return
	}
	c.json(http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}

// handleListFiles lists files, batch outputs included, newest first by
// default, with OpenAI's after, limit, order and purpose parameters.
func (e *Emulator) handleListFiles(c *call) {
	q := c.r.URL.Query()
	limit, aerr := parseLimit(q.Get("limit"), 10000, 10000)
	if aerr != nil {
		c.fail(aerr)
		return
	}
	order := q.Get("order")
	if order != "" && order != "asc" && order != "desc" {
		c.fail(invalid("order", "invalid_value", "Invalid value: '%s'. Supported values are: 'asc' and 'desc'.", order))
		return
	}
	purpose, after := q.Get("purpose"), q.Get("after")
	e.mu.Lock()
	e.runDueLocked(e.clock.Now())
	all := make([]*file, 0, len(e.files))
	for _, f := range e.fileOrder {
		if _, live := e.files[f.ID]; live && (purpose == "" || f.Purpose == purpose) {
			all = append(all, f)
		}
	}
	e.mu.Unlock()
	if order != "asc" {
		slices.Reverse(all)
	}
	if after != "" {
		i := slices.IndexFunc(all, func(f *file) bool { return f.ID == after })
		all = all[i+1:] // i == -1 lists from the start
	}
	page := all[:min(limit, len(all))]
	c.json(http.StatusOK, listPage(page, len(all) > len(page), func(f *file) string { return f.ID }))
}

// listPage is OpenAI's cursor list: object, data, first_id, last_id, has_more.
func listPage[T any](data []T, hasMore bool, id func(T) string) map[string]any {
	p := map[string]any{"object": "list", "data": data, "first_id": nil, "last_id": nil, "has_more": hasMore}
	if len(data) > 0 {
		p["first_id"], p["last_id"] = id(data[0]), id(data[len(data)-1])
	}
	return p
}
