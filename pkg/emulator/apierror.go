package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error types of OpenAI's error body.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
	typeRateLimit      = "requests"
)

// apiError is OpenAI's error object: {"error":{"message","type","param","code"}}.
// Param and Code are null when empty.
type apiError struct {
	status  int
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.Message) }

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newAPIError(status int, typ, param, code, format string, args ...any) *apiError {
	return &apiError{status: status, Message: fmt.Sprintf(format, args...), Type: typ, Param: strPtr(param), Code: strPtr(code)}
}

// invalid is a 400 invalid_request_error.
func invalid(param, code, format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, typeInvalidRequest, param, code, format, args...)
}

// notFound is a 404 invalid_request_error.
func notFound(param, code, format string, args ...any) *apiError {
	return newAPIError(http.StatusNotFound, typeInvalidRequest, param, code, format, args...)
}

func errRateLimited() *apiError {
	return newAPIError(http.StatusTooManyRequests, typeRateLimit, "", "rate_limit_exceeded",
		"Rate limit reached for requests in organization org-emulator on requests per min (RPM). Please try again later.")
}

func errServer(status int) *apiError {
	if status == http.StatusServiceUnavailable {
		return newAPIError(status, typeServer, "", "", "The server is overloaded or not ready yet.")
	}
	return newAPIError(http.StatusInternalServerError, typeServer, "", "",
		"The server had an error while processing your request. Sorry about that!")
}

// body is the JSON error envelope.
func (e *apiError) body() map[string]*apiError { return map[string]*apiError{"error": e} }

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errServer(status).body())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
