package emulator

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Error types of Anthropic's error body.
const (
	typeMsgInvalidRequest = "invalid_request_error"
	typeMsgAuthentication = "authentication_error"
	typeMsgNotFound       = "not_found_error"
	typeMsgTooLarge       = "request_too_large"
	typeMsgRateLimit      = "rate_limit_error"
	typeMsgAPI            = "api_error"
	typeMsgOverloaded     = "overloaded_error"
)

// StatusOverloaded is Anthropic's HTTP status for overloaded_error.
const StatusOverloaded = 529

// msgError is the error object of Anthropic's error body.
type msgError struct {
	status  int
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (e *msgError) Error() string { return fmt.Sprintf("%d %s", e.status, e.Message) }

// msgErrorBody is Anthropic's error body,
// {"type":"error","error":{"type","message"},"request_id"}, also the error
// of an errored result.
type msgErrorBody struct {
	Type      string    `json:"type"`
	Error     *msgError `json:"error"`
	RequestID string    `json:"request_id"`
}

func newMsgError(status int, typ, format string, args ...any) *msgError {
	return &msgError{status: status, Type: typ, Message: fmt.Sprintf(format, args...)}
}

// msgInvalid is a 400 invalid_request_error.
func msgInvalid(format string, args ...any) *msgError {
	return newMsgError(http.StatusBadRequest, typeMsgInvalidRequest, format, args...)
}

func errNoMsgBatch(id string) *msgError {
	return newMsgError(http.StatusNotFound, typeMsgNotFound, "Message Batch not found: %s", id)
}

func errMsgRateLimited() *msgError {
	return newMsgError(http.StatusTooManyRequests, typeMsgRateLimit,
		"This request would exceed the rate limit for your organization (org-emulator) of 50 requests per minute. Please try again later.")
}

func errMsgServer() *msgError {
	return newMsgError(http.StatusInternalServerError, typeMsgAPI, "Internal server error")
}

func errMsgOverloaded() *msgError {
	return newMsgError(StatusOverloaded, typeMsgOverloaded, "Overloaded")
}

// requestError is the error of an errored request, by the HTTP status its
// custom_id chose (see outcomeLocked).
func requestError(status int) *msgError {
	switch status {
	case http.StatusBadRequest:
		return msgInvalid("The request is invalid (emulated failure).")
	case http.StatusTooManyRequests:
		return errMsgRateLimited()
	default:
		return errMsgServer()
	}
}

// anthropic registers an Anthropic /v1 route: every answer carries a
// request-id header; the key, the anthropic-version header and fault
// injection are checked before the handler.
func (e *Emulator) anthropic(pattern, op string, h func(*call)) {
	e.route(pattern, op, func(c *call, f Faults) bool {
		c.requestID = newRequestID()
		c.w.Header().Set("request-id", c.requestID)
		if err := e.authorizeAnthropic(c.r); err != nil {
			c.failMsg(err)
			return false
		}
		if err := checkVersion(c.r); err != nil {
			c.failMsg(err)
			return false
		}
		return op == OpOther || !e.injectMsgFault(c, f)
	}, h)
}

// failMsg answers c with Anthropic's error body.
func (c *call) failMsg(err *msgError) {
	c.status = err.status
	writeJSON(c.w, err.status, msgErrorBody{Type: "error", Error: err, RequestID: c.requestID})
}

// authorizeAnthropic accepts the key as x-api-key, as Anthropic documents,
// or as a bearer token, which is how anthropic-sdk-go v2's WithAPIKey
// sends it.
func (e *Emulator) authorizeAnthropic(r *http.Request) *msgError {
	key := r.Header.Get("X-Api-Key")
	if key == "" {
		key, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	switch key = strings.TrimSpace(key); {
	case key == "":
		return newMsgError(http.StatusUnauthorized, typeMsgAuthentication, "x-api-key header is required")
	case e.cfg.APIKey != "" && key != e.cfg.APIKey:
		return newMsgError(http.StatusUnauthorized, typeMsgAuthentication, "invalid x-api-key")
	}
	return nil
}

// checkVersion requires an anthropic-version header holding a date, such
// as 2023-06-01 or 2026-10-21; the emulator answers every version alike.
func checkVersion(r *http.Request) *msgError {
	v := r.Header.Get("Anthropic-Version")
	if v == "" {
		return msgInvalid("anthropic-version: header is required")
	}
	if _, err := time.Parse(time.DateOnly, v); err != nil {
		return msgInvalid("anthropic-version: invalid version %q", v)
	}
	return nil
}

// injectMsgFault answers c with an injected 429 rate_limit_error, 500
// api_error or 529 overloaded_error and reports whether it did.
func (e *Emulator) injectMsgFault(c *call, f Faults) bool {
	r := f.rates(c.op)
	if r.RateLimitRate == 0 && r.ServerErrorRate == 0 && r.OverloadedRate == 0 {
		return false
	}
	roll, pick := e.rollFault()
	var err *msgError
	switch {
	case roll < r.RateLimitRate:
		err = errMsgRateLimited()
	case roll < r.RateLimitRate+r.ServerErrorRate:
		err = []*msgError{errMsgServer(), errMsgOverloaded()}[pick]
	case roll < r.RateLimitRate+r.ServerErrorRate+r.OverloadedRate:
		err = errMsgOverloaded()
	default:
		return false
	}
	setRetryAfter(c.w, f)
	c.failMsg(err)
	return true
}
