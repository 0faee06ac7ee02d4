package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batchfleet/batchfleet/pkg/ops"
)

// maxLimit bounds a page of the job list.
const maxLimit = 1000

// filterForm is the job list's query, as typed.
type filterForm struct {
	Status, Outcome, Model, Since, KeyPrefix, Limit, Offset string
}

func formOf(q url.Values) filterForm {
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return filterForm{Status: get("status"), Outcome: get("outcome"), Model: get("model"), Since: get("since"),
		KeyPrefix: get("key_prefix"), Limit: get("limit"), Offset: get("offset")}
}

// values is the query of the form with another offset ("" values left out).
func (f filterForm) values(offset int) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"status": f.Status, "outcome": f.Outcome, "model": f.Model,
		"since": f.Since, "key_prefix": f.KeyPrefix, "limit": f.Limit} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	return q
}

// parseFilter reads the job list's query (the filters of `batchfleet jobs
// ls`): status, outcome, model, key_prefix, since (a Go duration back from
// now, such as 24h or 7d, or an RFC 3339 time), limit and offset. The error
// names the bad parameter.
func parseFilter(q url.Values, now time.Time) (ops.Filter, error) {
	form := formOf(q)
	f := ops.Filter{Status: form.Status, Outcome: form.Outcome, Model: form.Model, KeyPrefix: form.KeyPrefix}
	if form.Since != "" {
		since, err := ops.ParseSince(form.Since, now)
		if err != nil {
			return f, err
		}
		f.Since = since
	}
	var err error
	if f.Limit, err = parseCount("limit", form.Limit); err != nil {
		return f, err
	}
	if f.Limit > maxLimit {
		return f, fmt.Errorf("limit must be at most %d, got %d", maxLimit, f.Limit)
	}
	if f.Offset, err = parseCount("offset", form.Offset); err != nil {
		return f, err
	}
	return f, f.Validate()
}

func parseCount(name, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q is not a whole number of at least 0", name, s)
	}
	return n, nil
}

type jobsData struct {
	Form     filterForm
	Statuses []string
	Outcomes []string
	// Error is a bad filter; Page is empty then.
	Error string
	Page  ops.Page
	// First is the 1-based position of the first row; Prev and Next link
	// the neighbouring pages ("" when there is none).
	First, Last int
	Prev, Next  string
}

func (d *dashboard) handleJobs(w http.ResponseWriter, r *http.Request) {
	form := formOf(r.URL.Query())
	data := jobsData{Form: form, Statuses: ops.Statuses, Outcomes: ops.Outcomes}
	p := page{Title: "Jobs", Nav: "jobs", Refresh: d.refresh, Data: &data}
	f, err := parseFilter(r.URL.Query(), d.o.Now())
	if err != nil {
		data.Error = err.Error()
		p.Refresh = 0
		d.render(w, http.StatusBadRequest, "jobs.html", p)
		return
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	data.Page, err = d.lister.List(ctx, f)
	if err != nil {
		d.internalError(w, r, "list jobs", err)
		return
	}
	limit := f.Limit
	if limit == 0 {
		limit = 50 // ops.Lister's default page size
	}
	if n := len(data.Page.Jobs); n > 0 {
		data.First, data.Last = f.Offset+1, f.Offset+n
	}
	if f.Offset > 0 {
		data.Prev = "/jobs?" + form.values(max(0, f.Offset-limit)).Encode()
	}
	if data.Page.More {
		data.Next = "/jobs?" + form.values(f.Offset+len(data.Page.Jobs)).Encode()
	}
	d.render(w, http.StatusOK, "jobs.html", p)
}
