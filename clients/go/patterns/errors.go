// Package patterns holds what the generated stubs of patterns-server lack: reading the
// rich details of an error (google.rpc.BadRequest, ErrorInfo, RetryInfo) that every
// service attaches to its failures.
package patterns

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation is a request field that broke a documented limit.
type FieldViolation struct {
	Field       string
	Description string
}

// ErrorDetails is what a failed call carried.
type ErrorDetails struct {
	// Code and Message are the gRPC status's.
	Code    codes.Code
	Message string
	// Reason is the google.rpc.ErrorInfo reason (stable, for programs to switch on), or "".
	Reason string
	// FieldViolations are the google.rpc.BadRequest's, for INVALID_ARGUMENT.
	FieldViolations []FieldViolation
	// RetryAfter is the google.rpc.RetryInfo delay, when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// Details reads the status and rich details of err, an error returned by a stub. An error
// that is no gRPC status reads as codes.Unknown with its text as the message.
func Details(err error) ErrorDetails {
	st, _ := status.FromError(err)
	details := ErrorDetails{Code: st.Code(), Message: st.Message()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			details.Reason = d.GetReason()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				details.FieldViolations = append(details.FieldViolations,
					FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			details.RetryAfter = d.GetRetryDelay().AsDuration()
			details.HasRetryAfter = true
		}
	}
	return details
}
