package contract

import (
	"errors"
	"fmt"
)

// Error codes of batch.completed "error" and the Batch-Error-Code header.
const (
	CodeInvalidJSON       = "invalid_json"
	CodeMissingKey        = "missing_idempotency_key"
	CodeInvalidKey        = "invalid_idempotency_key"
	CodeInvalidEndpoint   = "invalid_endpoint"
	CodeInvalidField      = "invalid_field"
	CodeInvalidMetadata   = "invalid_metadata"
	CodeInvalidInput      = "invalid_input"
	CodeDuplicateCustomID = "duplicate_custom_id"
	// CodeInputNotFound: the input_object named by the request is not in
	// the batch_intake bucket.
	CodeInputNotFound  = "input_not_found"
	CodeVendorRejected = "vendor_rejected"
	CodeSubmitFailed   = "submit_failed"
	CodeBatchFailed    = "batch_failed"
	CodeCancelled      = "cancelled"
	// CodeProviderUnavailable: the job's provider is not available in this
	// fleet (not configured, or not supported by this release).
	CodeProviderUnavailable = "provider_unavailable"
)

// ErrInvalidRequest matches every validation *Error with errors.Is.
var ErrInvalidRequest = errors.New("contract: invalid request")

// Error is the {code, message} object of the contract.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is makes validation errors match ErrInvalidRequest.
func (e *Error) Is(target error) bool {
	return target == ErrInvalidRequest && e.isValidation()
}

func (e *Error) isValidation() bool {
	switch e.Code {
	case CodeInvalidJSON, CodeMissingKey, CodeInvalidKey, CodeInvalidEndpoint, CodeInvalidField,
		CodeInvalidMetadata, CodeInvalidInput, CodeDuplicateCustomID, CodeInputNotFound:
		return true
	}
	return false
}
