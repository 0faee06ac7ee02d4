package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fleet's Prometheus metrics. Labels are bounded (never a
// key or batch id). A nil *Metrics records nothing, so tests and tools
// need not build one.
type Metrics struct {
	BatchesCreated  *prometheus.CounterVec // endpoint
	Adopted         prometheus.Counter
	SubmitErrors    *prometheus.CounterVec // kind
	Invalid         *prometheus.CounterVec // code
	AdmissionWaits  prometheus.Counter
	PollGets        *prometheus.CounterVec // path: claim, webhook, sweep (List pages)
	Sweeps          *prometheus.CounterVec // result: ok, error
	SweepLast       *prometheus.GaugeVec   // unix time of the last complete sweep, by provider
	SweepActive     *prometheus.GaugeVec   // the fleet's active batches the last sweep listed, by provider
	Transitions     *prometheus.CounterVec // to
	Completed       *prometheus.CounterVec // outcome
	Retries         *prometheus.CounterVec // reason
	WebhookAttempts *prometheus.CounterVec // result: ok, retry, dead_letter
	Rescued         *prometheus.CounterVec // what
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		BatchesCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_submit_batches_created_total",
			Help: "Vendor batches created."}, []string{"endpoint"}),
		Adopted: prometheus.NewCounter(prometheus.CounterOpts{Name: "batchfleet_submit_batches_adopted_total",
			Help: "Vendor batches found by reconciliation after a create with an unknown outcome, adopted instead of created again."}),
		SubmitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_submit_vendor_errors_total",
			Help: "Vendor errors during submission by kind (permanent, rate_limited, unavailable)."}, []string{"kind"}),
		Invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_submit_invalid_requests_total",
			Help: "Invalid batch.requests messages dead-lettered, by error code."}, []string{"code"}),
		AdmissionWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "batchfleet_submit_admission_waits_total",
			Help: "Submissions sent back to wait because an admission cap was reached."}),
		PollGets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_poll_vendor_gets_total",
			Help: "Vendor batch GETs by path (claim schedule, vendor webhook, or sweep: one List page)."}, []string{"path"}),
		Sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_poll_sweeps_total",
			Help: "List sweeps of the vendor's batches by provider and result (ok, error)."}, []string{"provider", "result"}),
		SweepLast: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "batchfleet_poll_sweep_last_success_timestamp_seconds",
			Help: "Unix time at which the last complete List sweep of a provider's batches finished (on its sweep leader)."}, []string{"provider"}),
		SweepActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "batchfleet_poll_sweep_active_batches",
			Help: "The fleet's non-terminal vendor batches of a provider listed by its last sweep (on its sweep leader)."}, []string{"provider"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_poll_transitions_total",
			Help: "Observed vendor status transitions by target status."}, []string{"to"}),
		Completed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_notify_jobs_completed_total",
			Help: "Jobs completed, by outcome."}, []string{"outcome"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_notify_retry_batches_total",
			Help: "Retry batches started, by dominant reason."}, []string{"reason"}),
		WebhookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_notify_webhook_attempts_total",
			Help: "Outbound webhook delivery attempts by result (ok, retry, dead_letter)."}, []string{"result"}),
		Rescued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "batchfleet_rescued_total",
			Help: "Stalled steps the rescuer re-drove, by what (submit, collect, decide, complete, slot, cancel)."}, []string{"what"}),
	}
	reg.MustRegister(m.Rescued, m.BatchesCreated, m.Adopted, m.SubmitErrors, m.Invalid, m.AdmissionWaits,
		m.PollGets, m.Sweeps, m.SweepLast, m.SweepActive, m.Transitions, m.Completed, m.Retries, m.WebhookAttempts)
	return m
}

// BatchCreated counts a vendor batch created for endpoint.
func (m *Metrics) BatchCreated(endpoint string) {
	if m != nil {
		m.BatchesCreated.WithLabelValues(endpoint).Inc()
	}
}

// BatchAdopted counts a batch adopted by reconciliation.
func (m *Metrics) BatchAdopted() {
	if m != nil {
		m.Adopted.Inc()
	}
}

// SubmitError counts a vendor error by kind.
func (m *Metrics) SubmitError(kind string) {
	if m != nil {
		m.SubmitErrors.WithLabelValues(kind).Inc()
	}
}

// InvalidRequest counts a dead-lettered request by code.
func (m *Metrics) InvalidRequest(code string) {
	if m != nil {
		m.Invalid.WithLabelValues(code).Inc()
	}
}

// AdmissionWait counts a submission held back by admission.
func (m *Metrics) AdmissionWait() {
	if m != nil {
		m.AdmissionWaits.Inc()
	}
}

// PollGet counts a vendor GET by path ("claim" or "webhook").
func (m *Metrics) PollGet(path string) {
	if m != nil {
		m.PollGets.WithLabelValues(path).Inc()
	}
}

// Swept records the end of a List sweep: err nil for a complete one that
// found active batches of the fleet.
func (m *Metrics) Swept(provider string, err error, active int, at time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.Sweeps.WithLabelValues(provider, "error").Inc()
		return
	}
	m.Sweeps.WithLabelValues(provider, "ok").Inc()
	m.SweepLast.WithLabelValues(provider).Set(float64(at.UnixNano()) / 1e9)
	m.SweepActive.WithLabelValues(provider).Set(float64(active))
}

// Transition counts an observed transition into status to.
func (m *Metrics) Transition(to string) {
	if m != nil {
		m.Transitions.WithLabelValues(to).Inc()
	}
}

// JobCompleted counts a job completed with outcome.
func (m *Metrics) JobCompleted(outcome string) {
	if m != nil {
		m.Completed.WithLabelValues(outcome).Inc()
	}
}

// RetryStarted counts a retry batch started for reason.
func (m *Metrics) RetryStarted(reason string) {
	if m != nil {
		m.Retries.WithLabelValues(reason).Inc()
	}
}

// WebhookAttempt counts an outbound webhook attempt by result.
func (m *Metrics) WebhookAttempt(result string) {
	if m != nil {
		m.WebhookAttempts.WithLabelValues(result).Inc()
	}
}

// Rescue counts one step the rescuer re-drove.
func (m *Metrics) Rescue(what string) {
	if m != nil {
		m.Rescued.WithLabelValues(what).Inc()
	}
}
