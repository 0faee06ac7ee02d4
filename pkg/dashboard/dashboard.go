package dashboard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// Options configure the dashboard. JS and Store are required; zero values
// of the others take their defaults.
type Options struct {
	// JS reads the streams, the presence bucket and the merged results.
	JS jetstream.JetStream
	// Store is the durable job store (its index answers the lists).
	Store *jobstore.Store
	// Prices estimate costs. Defaults to results.DefaultPriceTable().
	Prices results.PriceTable
	// AllowActions renders the Cancel and Replay webhooks buttons and
	// enables their POST endpoints; without it they answer 403.
	AllowActions bool
	// User and Password are the basic-auth credentials every request but
	// /healthz must carry. Required when AllowActions; when set without it
	// they protect the read-only pages too.
	User, Password string
	// WebhookSecret signs replayed dead-lettered webhooks (WEBHOOK_SECRET);
	// without it the replay button is not offered.
	WebhookSecret string
	// Refresh is the auto-refresh period of the Overview, Jobs and Job
	// pages. Defaults to 5s; negative turns auto-refresh off.
	Refresh time.Duration
	// Logger receives the dashboard's logs.
	Logger zerolog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// pageTimeout bounds the reads behind one page.
const pageTimeout = 15 * time.Second

// replayTimeout bounds a replay of the dead-lettered webhooks (each one is
// a delivery to a subscriber).
const replayTimeout = 2 * time.Minute

type dashboard struct {
	o       Options
	lister  *ops.Lister
	log     zerolog.Logger
	pages   map[string]*pageTemplate
	refresh int // seconds; 0 = off
}

// New returns the dashboard's handler. It fails when JS or Store is
// missing, when AllowActions is set without User and Password, or when
// only one of User and Password is given.
func New(o Options) (http.Handler, error) {
	if o.JS == nil || o.Store == nil {
		return nil, errors.New("dashboard: Options.JS and Options.Store are required")
	}
	if o.AllowActions && (o.User == "" || o.Password == "") {
		return nil, errors.New("dashboard: Options.User and Options.Password are required when AllowActions is set")
	}
	if (o.User == "") != (o.Password == "") {
		return nil, errors.New("dashboard: set both Options.User and Options.Password, or neither")
	}
	if o.Prices.Models == nil {
		o.Prices = results.DefaultPriceTable()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Refresh = cmp.Or(o.Refresh, 5*time.Second)
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	d := &dashboard{
		o:      o,
		lister: &ops.Lister{Store: o.Store, Prices: o.Prices, Now: o.Now},
		log:    o.Logger.With().Str("component", "dashboard").Logger(),
		pages:  pages,
	}
	if o.Refresh > 0 {
		d.refresh = max(1, int(math.Ceil(o.Refresh.Seconds())))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.handleOverview)
	mux.HandleFunc("GET /jobs", d.handleJobs)
	mux.HandleFunc("GET /jobs/{key}", d.handleJob)
	mux.HandleFunc("GET /jobs/{key}/results", d.handleResults)
	mux.HandleFunc("POST /jobs/{key}/cancel", d.action(d.handleCancel))
	mux.HandleFunc("GET /dlq", d.handleDLQ)
	mux.HandleFunc("POST /dlq/replay", d.action(d.handleReplay))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("/", d.handleNotFound)

	// Same-origin check for every POST: a browser tells a cross-site form
	// by Sec-Fetch-Site or Origin, and basic-auth credentials would
	// otherwise ride along with it.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.log.Warn().Str("path", r.URL.Path).Str("origin", r.Header.Get("Origin")).
			Str("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")).Msg("cross-origin request refused")
		d.renderError(w, r, http.StatusForbidden, "Cross-origin request refused: actions must come from the dashboard's own pages.")
	}))
	return d.logRequests(securityHeaders(d.basicAuth(csrf.Handler(mux)))), nil
}

// action guards a POST endpoint: 403 unless AllowActions.
func (d *dashboard) action(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.o.AllowActions {
			d.renderError(w, r, http.StatusForbidden, "This dashboard is read-only: actions are disabled.")
			return
		}
		h(w, r)
	}
}

// basicAuth requires the configured credentials on every request but
// /healthz. Both sides are hashed first so the comparison takes the same
// time whatever the lengths.
func (d *dashboard) basicAuth(next http.Handler) http.Handler {
	if d.o.User == "" {
		return next
	}
	wantUser, wantPass := sha256.Sum256([]byte(d.o.User)), sha256.Sum256([]byte(d.o.Password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		user, pass, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		match := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) & subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || match != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="batchfleet dashboard", charset="UTF-8"`)
			http.Error(w, "401 unauthorized: this dashboard needs a user name and password", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// securityHeaders forbids framing, inline scripts and styles, and any
// resource from elsewhere: the pages use only /static/style.css.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status of a response for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (d *dashboard) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		d.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", sw.status).
			Dur("took", time.Since(start)).Msg("request")
	})
}

// pageContext bounds the reads of one page.
func pageContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), pageTimeout)
}
