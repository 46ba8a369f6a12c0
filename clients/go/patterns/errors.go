package patterns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation is a request field that broke a documented limit.
type FieldViolation struct {
	Field       string
	Description string
}

// Error is every failed call of the Client: the gRPC status and the rich details the
// server attaches to it. Read it with errors.As:
//
//	var e *patterns.Error
//	if errors.As(err, &e) && e.Code == codes.InvalidArgument { ... e.FieldViolations[0].Field ... }
//
// It also answers status.FromError and status.Code, and errors.Is(err, context.Canceled)
// or errors.Is(err, context.DeadlineExceeded) for the codes Canceled and DeadlineExceeded.
type Error struct {
	// Code and Message are the gRPC status's.
	Code    codes.Code
	Message string
	// Reason is the google.rpc.ErrorInfo reason (stable, for programs to switch on:
	// OVERLOADED, LEASE_LOST, INVALID_API_KEY, ...), or "".
	Reason string
	// FieldViolations are the google.rpc.BadRequest's, for INVALID_ARGUMENT.
	FieldViolations []FieldViolation
	// RetryAfter is the google.rpc.RetryInfo delay: how long to wait before the same call
	// may succeed; 0 when the server gave none.
	RetryAfter time.Duration

	status *status.Status
}

// Error is "CODE (REASON): message", the reason left out when there is none.
func (e *Error) Error() string {
	if e.Reason != "" && e.Reason != e.CodeName() {
		return fmt.Sprintf("%s (%s): %s", e.CodeName(), e.Reason, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.CodeName(), e.Message)
}

// CodeName is the canonical name of Code, as other languages and the docs spell it:
// "INVALID_ARGUMENT", "UNAVAILABLE", ... (codes.Code's String gives "InvalidArgument").
func (e *Error) CodeName() string {
	return code.Code(e.Code).String()
}

// GRPCStatus is the status the error stands for (so status.FromError reads it).
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Is makes errors.Is(err, context.Canceled) and errors.Is(err, context.DeadlineExceeded)
// true for the codes Canceled and DeadlineExceeded, whoever ended the call.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// asError is err as an *Error when it carries a gRPC status (every failure of a stub does),
// or err unchanged (nil stays nil; the caller's own errors, a compute's, pass through).
func asError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason = d.GetReason()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations,
					FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			e.RetryAfter = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

// What a fallback covers: the server or its Redis unreachable or too slow, or the server
// (or the caller's share of it) overloaded. Not covered: what the caller must fix (a wrong
// argument, a refused key, a request too large), which a fallback would only hide.
var overloadReasons = map[string]bool{"OVERLOADED": true, "TENANT_OVERLOADED": true}

// FallsBack reports whether a recipe's fallback covers err (a fail-open rate-limit check,
// GetOrCompute computing directly): UNAVAILABLE (the server or its Redis unavailable, or no
// connection), DEADLINE_EXCEEDED (no answer within the recipe's budget: a paused server or
// Redis), and RESOURCE_EXHAUSTED with reason OVERLOADED or TENANT_OVERLOADED.
func FallsBack(err error) bool {
	var e *Error
	if !errors.As(asError(err), &e) {
		return false
	}
	switch e.Code {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return overloadReasons[e.Reason]
	}
	return false
}

// ErrorDetails is what a failed call carried.
//
// Deprecated: use errors.As with *Error, which carries the same fields.
type ErrorDetails struct {
	Code            codes.Code
	Message         string
	Reason          string
	FieldViolations []FieldViolation
	RetryAfter      time.Duration
	HasRetryAfter   bool
}

// Details reads the status and rich details of err, an error returned by a stub. An error
// that is no gRPC status reads as codes.Unknown with its text as the message.
//
// Deprecated: use errors.As with *Error; the Client's methods return one.
func Details(err error) ErrorDetails {
	var e *Error
	if !errors.As(asError(err), &e) {
		st := status.Convert(err)
		return ErrorDetails{Code: st.Code(), Message: st.Message()}
	}
	return ErrorDetails{
		Code: e.Code, Message: e.Message, Reason: e.Reason, FieldViolations: e.FieldViolations,
		RetryAfter: e.RetryAfter, HasRetryAfter: e.RetryAfter > 0,
	}
}
