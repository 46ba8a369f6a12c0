package patterns

// Unit tests: what needs no server.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// statusError is a failure as grpc-go hands it to a caller: a status with details.
func statusError(t *testing.T, code codes.Code, message string, details ...*errdetails.ErrorInfo) *status.Status {
	t.Helper()
	st := status.New(code, message)
	for _, d := range details {
		var err error
		if st, err = st.WithDetails(d); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestAnErrorCarriesTheRichDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "key: must not be empty").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "patterns"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "key", Description: "must not be empty"},
		}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := fmt.Errorf("checking: %w", asError(st.Err()))
	var e *Error
	if !errors.As(wrapped, &e) {
		t.Fatalf("errors.As found no *Error in %v", wrapped)
	}
	if e.Code != codes.InvalidArgument || e.CodeName() != "INVALID_ARGUMENT" || e.Reason != "INVALID_ARGUMENT" {
		t.Errorf("code %v (%s), reason %q", e.Code, e.CodeName(), e.Reason)
	}
	if len(e.FieldViolations) != 1 || e.FieldViolations[0] != (FieldViolation{"key", "must not be empty"}) {
		t.Errorf("field violations %v", e.FieldViolations)
	}
	if e.RetryAfter != 1500*time.Millisecond {
		t.Errorf("retry after %v", e.RetryAfter)
	}
	if got := status.Code(e); got != codes.InvalidArgument {
		t.Errorf("status.Code reads %v", got)
	}
	if e.Error() != "INVALID_ARGUMENT: key: must not be empty" {
		t.Errorf("text %q", e.Error())
	}
}

func TestErrorsReadAsTheContextsErrors(t *testing.T) {
	if !errors.Is(asError(status.Error(codes.DeadlineExceeded, "slow")), context.DeadlineExceeded) {
		t.Error("DEADLINE_EXCEEDED is not context.DeadlineExceeded")
	}
	if !errors.Is(asError(status.Error(codes.Canceled, "gone")), context.Canceled) {
		t.Error("CANCELED is not context.Canceled")
	}
	if errors.Is(asError(status.Error(codes.Unavailable, "down")), context.Canceled) {
		t.Error("UNAVAILABLE is context.Canceled")
	}
	plain := errors.New("the caller's own")
	if asError(plain) != plain || asError(nil) != nil {
		t.Error("an error without a status changed")
	}
}

func TestWhatAFallbackCovers(t *testing.T) {
	for _, c := range []struct {
		code   codes.Code
		reason string
		covers bool
	}{
		{codes.Unavailable, "REDIS_UNAVAILABLE", true},
		{codes.DeadlineExceeded, "", true},
		{codes.ResourceExhausted, "OVERLOADED", true},
		{codes.ResourceExhausted, "TENANT_OVERLOADED", true},
		{codes.ResourceExhausted, "SLOW_CONSUMER", false},
		{codes.ResourceExhausted, "", false},
		{codes.InvalidArgument, "INVALID_ARGUMENT", false},
		{codes.Unauthenticated, "INVALID_API_KEY", false},
		{codes.Canceled, "", false},
	} {
		var details []*errdetails.ErrorInfo
		if c.reason != "" {
			details = append(details, &errdetails.ErrorInfo{Reason: c.reason})
		}
		err := asError(statusError(t, c.code, "x", details...).Err())
		if FallsBack(err) != c.covers {
			t.Errorf("%v %s: FallsBack %v", c.code, c.reason, !c.covers)
		}
	}
	if FallsBack(errors.New("no status")) || FallsBack(nil) {
		t.Error("an error without a status falls back")
	}
}

func TestAFallbackDecisionIsThePolicysCapacity(t *testing.T) {
	overloaded := &Error{Code: codes.ResourceExhausted, Reason: "OVERLOADED", RetryAfter: 3 * time.Second}
	open := fallbackDecision(TokenBucket(10, time.Second, 50), 2, overloaded, true)
	if !open.Allowed || !open.Fallback || open.Limit != 50 || open.Remaining != 48 || open.RetryAfter != 0 {
		t.Errorf("fail-open: %+v", open)
	}
	closed := fallbackDecision(GCRA(10, time.Second), 1, overloaded, false)
	if closed.Allowed || !closed.Fallback || closed.Limit != 10 || closed.Remaining != 0 || closed.RetryAfter != 3*time.Second {
		t.Errorf("fail-closed: %+v", closed)
	}
	unsaid := fallbackDecision(GCRA(10, time.Second), 1, &Error{Code: codes.Unavailable}, false)
	if unsaid.RetryAfter != time.Second || unsaid.ResetAfter != time.Second {
		t.Errorf("fail-closed without RetryInfo: %+v", unsaid)
	}
	costly := fallbackDecision(GCRA(3, time.Second), 5, overloaded, true)
	if costly.Remaining != 0 {
		t.Errorf("a cost above the capacity leaves %d", costly.Remaining)
	}
}

func TestTheBackoffDoublesWithJitterAndHonoursRetryInfo(t *testing.T) {
	b := newBackoff()
	ceiling := FirstBackoff
	for range 10 {
		wait := b.after(0)
		if wait < ceiling/2 || wait > ceiling {
			t.Fatalf("wait %v outside [%v, %v]", wait, ceiling/2, ceiling)
		}
		ceiling = min(LastBackoff, ceiling*2)
	}
	if ceiling != LastBackoff {
		t.Fatalf("the waits reached %v, not %v", ceiling, LastBackoff)
	}
	if wait := b.after(7 * time.Second); wait != 7*time.Second {
		t.Errorf("a RetryInfo of 7s gave a wait of %v", wait)
	}
	b.reset()
	if wait := b.after(0); wait > FirstBackoff {
		t.Errorf("after a reset the wait is %v", wait)
	}
}

func TestAnAPIKeyIsRefusedOverPlaintext(t *testing.T) {
	_, err := NewClient("127.0.0.1:1", WithAPIKey("secret-key"))
	if err == nil {
		t.Fatal("a key over plaintext was accepted")
	}
	if strings.Contains(err.Error(), "secret-key") {
		t.Errorf("the error names the key: %v", err)
	}
	if _, err := NewClient("127.0.0.1:1", WithAPIKey(" \n")); err == nil {
		t.Error("an empty key was accepted")
	}
	if _, err := NewClient("127.0.0.1:1", WithAPIKey("sécret"), WithTLS(nil)); err == nil || strings.Contains(err.Error(), "sécret") {
		t.Errorf("a key that is no header value: %v", err)
	}
	c, err := NewClient("127.0.0.1:1", WithAPIKey("secret-key"), WithTLS(nil))
	if err != nil {
		t.Fatalf("a key over TLS: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

func TestOptionsThatDoNotGoTogether(t *testing.T) {
	owner, err := NewClient("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := NewClient("", WithConn(owner.Conn()), WithTLS(nil)); err == nil {
		t.Error("WithConn with WithTLS was accepted")
	}
	if _, err := NewClient("127.0.0.1:1", WithTimeout(0)); err == nil {
		t.Error("a zero timeout was accepted")
	}
	if _, err := NewClient("127.0.0.1:1", WithTLSFiles("", "client.pem", "")); err == nil {
		t.Error("a certificate without its key was accepted")
	}
	if _, err := NewClient("127.0.0.1:1", WithTLSFiles("/nonexistent/ca.pem", "", "")); err == nil {
		t.Error("a missing CA file was accepted")
	}
	reused, err := NewClient("", WithConn(owner.Conn()))
	if err != nil {
		t.Fatal(err)
	}
	if err := reused.Close(); err != nil || reused.Conn() != owner.Conn() {
		t.Errorf("closing a client over a given connection: %v", err)
	}
}

func TestTheHeadersOfADecision(t *testing.T) {
	refused := Decision{
		Allowed: false, Limit: 100, Remaining: 0, ResetAfter: 1500 * time.Millisecond,
		RetryAfter: 2100 * time.Millisecond, Policy: TokenBucket(100, time.Minute, 20),
	}
	h := refused.Headers()
	for name, want := range map[string]string{
		"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "3",
		"RateLimit-Policy": "100;w=60;burst=20", "Retry-After": "3",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, not %q", name, got, want)
		}
	}
	allowed := Decision{Allowed: true, Limit: 3, Remaining: 2, ResetAfter: 20 * time.Second, Policy: GCRA(3, time.Minute)}
	h = allowed.Headers()
	if h.Get("Retry-After") != "" || h.Get("RateLimit-Reset") != "20" || h.Get("RateLimit-Policy") != "3;w=60" {
		t.Errorf("allowed: %v", h)
	}
	if (Decision{RetryAfter: time.Millisecond}).RetryAfterSeconds() != 1 || allowed.RetryAfterSeconds() != 0 {
		t.Error("RetryAfterSeconds")
	}
}
