package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// maxLetters bounds the dead letters a page shows (the newest).
const maxLetters = 200

// payloadRunes bounds the payload shown per dead letter.
const payloadRunes = 400

// letter is a dead letter as shown.
type letter struct {
	ops.DeadLetter
	ErrorCode, Error string
	// JobKey is the job the letter is about, when its payload names one.
	JobKey string
	// Other are the remaining headers.
	Other     []header
	Payload   string
	Truncated bool
	Size      int
}

type header struct{ Name, Value string }

type dlqData struct {
	Total     int
	BySubject []count
	Letters   []letter
	// CanReplay: actions are on and a webhook secret is configured.
	CanReplay bool
	// Replayed is set after a replay: what it did with each letter.
	Replayed               []ops.ReplayResult
	ReplayRan              bool
	ReplayOK, ReplayFailed int
}

func (d *dashboard) handleDLQ(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := pageContext(r)
	defer cancel()
	d.renderDLQ(ctx, w, r, nil)
}

// renderDLQ shows the dead letters, and a replay's results when given.
func (d *dashboard) renderDLQ(ctx context.Context, w http.ResponseWriter, r *http.Request, replayed *[]ops.ReplayResult) {
	all, err := ops.ListDLQ(ctx, d.o.JS, dlqSubjects)
	if err != nil {
		d.internalError(w, r, "list dead letters", err)
		return
	}
	data := dlqData{Total: len(all), CanReplay: d.o.AllowActions && d.o.WebhookSecret != ""}
	if replayed != nil {
		data.ReplayRan, data.Replayed = true, *replayed
		for _, res := range data.Replayed {
			if res.Error == "" {
				data.ReplayOK++
			} else {
				data.ReplayFailed++
			}
		}
	}
	bySubject := map[string]int{}
	for _, dl := range all {
		bySubject[dl.Subject]++
	}
	for _, s := range slices.Sorted(maps.Keys(bySubject)) {
		data.BySubject = append(data.BySubject, count{s, bySubject[s]})
	}
	// Newest first.
	for i := len(all) - 1; i >= 0 && len(data.Letters) < maxLetters; i-- {
		data.Letters = append(data.Letters, letterOf(all[i]))
	}
	d.render(w, http.StatusOK, "dlq.html", page{Title: "Dead letters", Nav: "dlq", Data: data})
}

func letterOf(dl ops.DeadLetter) letter {
	h := http.Header(dl.Headers)
	l := letter{DeadLetter: dl, ErrorCode: h.Get(contract.HeaderErrorCode), Error: h.Get(contract.HeaderError),
		Payload: truncate(payloadRunes, dl.Data), Size: len(dl.Data)}
	l.Truncated = l.Payload != dl.Data
	var ref struct {
		Key     string `json:"idempotency_key"`
		RetryOf string `json:"retry_of"` // a batch.retry names its retry batch's key
	}
	if json.Unmarshal([]byte(dl.Data), &ref) == nil {
		if k := cmp.Or(ref.RetryOf, ref.Key); contract.ValidKey(k) {
			l.JobKey = k
		}
	}
	for _, k := range slices.Sorted(maps.Keys(dl.Headers)) {
		switch http.CanonicalHeaderKey(k) {
		case contract.HeaderErrorCode, contract.HeaderError, contract.HeaderMsgID:
			continue
		}
		l.Other = append(l.Other, header{k, strings.Join(dl.Headers[k], ", ")})
	}
	return l
}

// handleReplay delivers the dead-lettered webhooks again and shows what
// happened to each.
func (d *dashboard) handleReplay(w http.ResponseWriter, r *http.Request) {
	if d.o.WebhookSecret == "" {
		d.renderError(w, r, http.StatusConflict, "Replay needs the webhook secret (WEBHOOK_SECRET) the dashboard was not given.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), replayTimeout)
	defer cancel()
	res, err := ops.ReplayWebhooks(ctx, d.o.JS, d.o.WebhookSecret, "")
	if err != nil {
		d.internalError(w, r, "replay webhooks", err)
		return
	}
	failed := 0
	for _, x := range res {
		if x.Error != "" {
			failed++
		}
	}
	d.log.Info().Int("replayed", len(res)).Int("failed", failed).Str("remote_addr", r.RemoteAddr).Msg("webhooks replayed")
	d.renderDLQ(ctx, w, r, &res)
}
