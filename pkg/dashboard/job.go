package dashboard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// resultsTimeout bounds streaming one job's merged results.
const resultsTimeout = 10 * time.Minute

type jobData struct {
	Job *jobstore.Job
	// Entry summarises the record as lists show it (progress, model).
	Entry      jobstore.Entry
	ListStatus string
	// VendorStatus is the newest attempt's batch status.
	VendorStatus string
	CostSoFar    *float64
	Duration     time.Duration
	CanCancel    bool
	// Notice is set after an action redirected back here.
	Notice string
}

// jobKey is the {key} of the path, or a 404 page when it cannot be an
// idempotency key (such as one holding an escaped '/').
func (d *dashboard) jobKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := r.PathValue("key")
	if !contract.ValidKey(key) {
		d.renderError(w, r, http.StatusNotFound, quote(key)+" is not an idempotency key (1..128 of A-Z a-z 0-9 . _ : -).")
		return "", false
	}
	return key, true
}

func (d *dashboard) handleJob(w http.ResponseWriter, r *http.Request) {
	key, ok := d.jobKey(w, r)
	if !ok {
		return
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	j, err := d.o.Store.Get(ctx, key)
	if errors.Is(err, jobstore.ErrNotFound) {
		d.renderError(w, r, http.StatusNotFound, "No job has the key "+quote(key)+".")
		return
	}
	if err != nil {
		d.internalError(w, r, "read job", err)
		return
	}
	e := jobstore.EntryOf(j)
	data := jobData{Job: j, Entry: e, ListStatus: ops.ListStatus(e.State), CostSoFar: ops.CostSoFar(d.o.Prices, &e),
		Duration: e.Duration(), CanCancel: d.o.AllowActions && !j.Final && !j.CancelRequested}
	if a := j.Last(); a != nil {
		data.VendorStatus = a.Status
	}
	if r.URL.Query().Get("notice") == "cancel" {
		data.Notice = "Cancel requested: the fleet cancels the job's vendor batch and ends the job cancelled."
	}
	refresh := d.refresh
	if j.Final && j.Completed {
		refresh = 0 // nothing moves any more
	}
	d.render(w, http.StatusOK, "job.html", page{Title: key, Nav: "jobs", Refresh: refresh, Data: data})
}

// countingWriter tells whether anything was written yet.
type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.n == 0 {
		c.w.Header().Set("Content-Type", "application/x-ndjson")
		c.w.WriteHeader(http.StatusOK)
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// handleResults streams a job's merged results (JSONL) from the object
// store without holding them in memory.
func (d *dashboard) handleResults(w http.ResponseWriter, r *http.Request) {
	key, ok := d.jobKey(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), resultsTimeout)
	defer cancel()
	// Keys hold only [A-Za-z0-9._:-]; ':' is no file name character everywhere.
	w.Header().Set("Content-Disposition", `inline; filename="`+strings.ReplaceAll(key, ":", "_")+`.jsonl"`)
	cw := &countingWriter{w: w}
	_, err := ops.CopyResults(ctx, d.o.JS, key, cw)
	switch {
	case err == nil && cw.n == 0:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	case err == nil:
	case cw.n > 0:
		// The status is sent: cut the connection so the client sees a
		// truncated body, not a complete-looking one.
		d.log.Error().Err(err).Str("idempotency_key", key).Int64("bytes", cw.n).Msg("stream results")
		panic(http.ErrAbortHandler)
	case errors.Is(err, jobstore.ErrNotFound):
		w.Header().Del("Content-Disposition")
		d.renderError(w, r, http.StatusNotFound, "Job "+quote(key)+" has no merged results (unknown key, not finished yet, or past RESULTS_RETENTION).")
	default:
		w.Header().Del("Content-Disposition")
		d.internalError(w, r, "read results", err)
	}
}

// handleCancel publishes a batch.cancel and sends the browser back to the job.
func (d *dashboard) handleCancel(w http.ResponseWriter, r *http.Request) {
	key, ok := d.jobKey(w, r)
	if !ok {
		return
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	err := ops.Cancel(ctx, d.o.JS, d.o.Store, key)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		d.renderError(w, r, http.StatusNotFound, "No job has the key "+quote(key)+".")
		return
	case errors.Is(err, ops.ErrFinal):
		d.renderError(w, r, http.StatusConflict, strings.ToUpper(err.Error()[:1])+err.Error()[1:]+".")
		return
	case err != nil:
		d.internalError(w, r, "cancel job", err)
		return
	}
	d.log.Info().Str("idempotency_key", key).Str("remote_addr", r.RemoteAddr).Msg("cancel requested")
	http.Redirect(w, r, jobHref(key)+"?notice=cancel", http.StatusSeeOther)
}

func quote(s string) string { return "“" + s + "”" }
