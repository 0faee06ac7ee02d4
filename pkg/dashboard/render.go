package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

//go:embed templates/*.html static/*
var assets embed.FS

// pageTemplate is the layout with one page's content.
type pageTemplate struct {
	*template.Template
}

// page is what every template gets: the layout's fields and the page's Data.
type page struct {
	Title   string
	Nav     string // overview, jobs, dlq: the highlighted nav entry
	Refresh int    // seconds; 0: no auto-refresh
	Actions bool
	Now     time.Time
	Data    any
}

var funcs = template.FuncMap{
	"ts":       formatTime,
	"tsms":     formatTimeMS,
	"ago":      ago,
	"dur":      formatDuration,
	"usd":      usd,
	"jobHref":  jobHref,
	"truncate": truncate,
	"join":     strings.Join,
	"rate":     func(f float64) string { return fmt.Sprintf("%.3f", f) },
}

// The page names are the files under templates/ besides layout.html.
var pageNames = []string{"overview.html", "jobs.html", "job.html", "dlq.html", "error.html"}

func parsePages() (map[string]*pageTemplate, error) {
	out := make(map[string]*pageTemplate, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		out[name] = &pageTemplate{t}
	}
	return out, nil
}

// render executes a page into a buffer first, so a template error is a
// clean 500 rather than half a page.
func (d *dashboard) render(w http.ResponseWriter, status int, name string, p page) {
	p.Actions = d.o.AllowActions
	p.Now = d.o.Now().UTC()
	var buf bytes.Buffer
	if err := d.pages[name].Execute(&buf, p); err != nil {
		d.log.Error().Err(err).Str("template", name).Msg("render page")
		http.Error(w, "500 internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorData struct {
	Status  int
	Text    string
	Message string
}

// renderError shows an error page with a message for the operator.
func (d *dashboard) renderError(w http.ResponseWriter, _ *http.Request, status int, msg string) {
	d.render(w, status, "error.html", page{Title: http.StatusText(status),
		Data: errorData{Status: status, Text: http.StatusText(status), Message: msg}})
}

// internalError logs err once and shows it.
func (d *dashboard) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	d.log.Error().Err(err).Str("path", r.URL.Path).Msg(what)
	d.renderError(w, r, http.StatusInternalServerError, what+": "+err.Error())
}

func (d *dashboard) handleNotFound(w http.ResponseWriter, r *http.Request) {
	d.renderError(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
}

func staticHandler() http.Handler {
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}

// jobHref is the detail page of a job (keys may hold '.', ':', '-', '_').
func jobHref(key string) string {
	return "/jobs/" + url.PathEscape(key)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// formatTimeMS shows milliseconds too (timeline events a moment apart).
func formatTimeMS(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

// ago is how long before now t was, coarsely.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "just now"
	}
	return formatDuration(d) + " ago"
}

// formatDuration rounds a duration to what an operator reads at a glance.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// usd formats a float64 or *float64 estimate in dollars, with the digits a
// small batch needs; nil is "—".
func usd(v any) string {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case *float64:
		if x == nil {
			return "—"
		}
		f = *x
	default:
		return "—"
	}
	switch {
	case f == 0:
		return "$0"
	case f < 0.01:
		return fmt.Sprintf("$%.6f", f)
	case f < 100:
		return fmt.Sprintf("$%.4f", f)
	}
	return fmt.Sprintf("$%.2f", f)
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(n int, s string) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
