package api

import (
	"encoding/json"
	"net/http"
)

// Error is an API error in OpenAI's shape:
// {"error":{"message":…,"type":…,"param":…,"code":…}}.
type Error struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
	// unknown: the request has a member its API does not define
	// (UnknownMember).
	unknown bool
}

// UnknownMember says whether e refuses a member the API does not define:
// a server that ignores such members (SplitUnknown) decodes again.
func (e *Error) UnknownMember() bool { return e != nil && e.unknown }

func (e *Error) Error() string { return e.Message }

// JSON is the error's response body.
func (e *Error) JSON() []byte {
	b, _ := json.Marshal(struct {
		Error *Error `json:"error"`
	}{e})
	return b
}

func ptr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Invalid is a 400 invalid_request_error about param (may be empty).
func Invalid(param, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Param: ptr(param)}
}

// NewError builds an error with a status, type and code.
func NewError(status int, typ, code, msg string) *Error {
	return &Error{Status: status, Message: msg, Type: typ, Code: ptr(code)}
}

// ModelNotFound is OpenAI's 404 for an unknown model.
func ModelNotFound(model string) *Error {
	e := NewError(http.StatusNotFound, "invalid_request_error", "model_not_found",
		"The model `"+model+"` does not exist or you do not have access to it.")
	e.Param = ptr("model")
	return e
}
