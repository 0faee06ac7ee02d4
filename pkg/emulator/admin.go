package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
)

// The admin API (no auth) lets tests and operators inspect and steer the
// emulator; it is part of neither vendor's API:
//
//	GET  /_emulator/batches?provider= {"object":"list","data":[BatchInfo...]} oldest first: both
//	                                  APIs' batches, or only provider "openai" or "anthropic" ones
//	GET  /_emulator/calls?batch_id=   {"object":"list","data":[Call...]} oldest first
//	GET  /_emulator/stats             Stats
//	GET  /_emulator/faults            Faults (JSON form of Faults.MarshalJSON)
//	PUT  /_emulator/faults            Faults -> the Faults in force
//	POST /_emulator/reset-stats       -> Stats after the reset

func (e *Emulator) handleAdminBatches(w http.ResponseWriter, r *http.Request) {
	all := e.Batches()
	if p := r.URL.Query().Get("provider"); p != "" {
		all = slices.DeleteFunc(all, func(b BatchInfo) bool { return b.Provider != p })
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": all})
}

func (e *Emulator) handleAdminCalls(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": e.Calls(r.URL.Query().Get("batch_id"))})
}

func (e *Emulator) handleAdminStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.Stats())
}

func (e *Emulator) handleAdminGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.Faults())
}

func (e *Emulator) handleAdminPutFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, invalid("", "invalid_request", "Read body: %v", err))
		return
	}
	var f Faults
	if err := json.Unmarshal(body, &f); err != nil {
		writeError(w, invalid("", "invalid_json", "%v", err))
		return
	}
	if err := e.SetFaults(f); err != nil {
		writeError(w, invalid("", "invalid_value", "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, e.Faults())
}

func (e *Emulator) handleAdminResetStats(w http.ResponseWriter, _ *http.Request) {
	e.ResetStats()
	writeJSON(w, http.StatusOK, e.Stats())
}
