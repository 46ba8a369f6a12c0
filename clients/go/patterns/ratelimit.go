package patterns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	ratelimitv1 "github.com/patterns-server/patterns-server/clients/go/patterns/ratelimit/v1"
)

// Algorithm is how a policy counts units over time (see the contract for each one's
// trade-offs).
type Algorithm = ratelimitv1.Algorithm

// The algorithms.
const (
	AlgorithmFixedWindow          = ratelimitv1.Algorithm_ALGORITHM_FIXED_WINDOW
	AlgorithmSlidingWindowLog     = ratelimitv1.Algorithm_ALGORITHM_SLIDING_WINDOW_LOG
	AlgorithmSlidingWindowCounter = ratelimitv1.Algorithm_ALGORITHM_SLIDING_WINDOW_COUNTER
	AlgorithmTokenBucket          = ratelimitv1.Algorithm_ALGORITHM_TOKEN_BUCKET
	AlgorithmGCRA                 = ratelimitv1.Algorithm_ALGORITHM_GCRA
)

// Policy is Limit units per Period, counted by Algorithm; Burst (buckets only) is the most
// admitted at once after a quiet spell (0: Limit).
type Policy struct {
	Algorithm Algorithm
	Limit     uint64
	Period    time.Duration
	Burst     uint64
}

// FixedWindow is windows aligned on the clock; cheapest; up to 2x limit around a boundary.
func FixedWindow(limit uint64, period time.Duration) Policy {
	return Policy{Algorithm: AlgorithmFixedWindow, Limit: limit, Period: period}
}

// SlidingWindowLog is exact: at most limit in any period (limit at most 100,000).
func SlidingWindowLog(limit uint64, period time.Duration) Policy {
	return Policy{Algorithm: AlgorithmSlidingWindowLog, Limit: limit, Period: period}
}

// SlidingWindowCounter is an approximate rolling window in constant memory.
func SlidingWindowCounter(limit uint64, period time.Duration) Policy {
	return Policy{Algorithm: AlgorithmSlidingWindowCounter, Limit: limit, Period: period}
}

// TokenBucket is a bucket of burst tokens (0: limit) refilled at limit per period.
func TokenBucket(limit uint64, period time.Duration, burst uint64) Policy {
	return Policy{Algorithm: AlgorithmTokenBucket, Limit: limit, Period: period, Burst: burst}
}

// GCRA is the token bucket's decisions stored as one timestamp per key (burst: Limit).
func GCRA(limit uint64, period time.Duration) Policy {
	return Policy{Algorithm: AlgorithmGCRA, Limit: limit, Period: period}
}

func (p Policy) message() *ratelimitv1.Policy {
	return &ratelimitv1.Policy{
		Algorithm: p.Algorithm, Limit: p.Limit, Period: durationpb.New(p.Period), Burst: p.Burst,
	}
}

// Decision is a check's answer. Limit is the policy's capacity, Remaining what is left of
// it, ResetAfter the time until it is whole again, RetryAfter (zero when allowed) the wait
// until the same cost would be admitted. Fallback is true when the decision is the
// client's own (FailOpen or FailClosed), the server having no answer within the budget:
// then Limit is the policy's capacity (Burst, else Limit) and Remaining capacity - cost
// when admitted, 0 when refused.
type Decision struct {
	Allowed    bool
	Limit      uint64
	Remaining  uint64
	ResetAfter time.Duration
	RetryAfter time.Duration
	Fallback   bool
	Policy     Policy
}

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up, at least 1 when refused (0
// when allowed): what HTTP's Retry-After takes.
func (d Decision) RetryAfterSeconds() int64 {
	if d.Allowed {
		return 0
	}
	return max(1, wholeSeconds(d.RetryAfter))
}

// Headers are the IETF rate-limit headers of the answer (draft-ietf-httpapi-ratelimit-headers):
// RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (seconds, rounded up),
// RateLimit-Policy ("<limit>;w=<period in seconds>", with ";burst=<burst>" for a bucket
// that has one) and, when refused, Retry-After (seconds, rounded up, never 0): a 429 is
//
//	maps.Copy(w.Header(), decision.Headers())
//	w.WriteHeader(http.StatusTooManyRequests)
func (d Decision) Headers() http.Header {
	reset := wholeSeconds(d.ResetAfter)
	if !d.Allowed {
		reset = max(1, reset, d.RetryAfterSeconds())
	}
	h := http.Header{}
	h.Set("RateLimit-Limit", strconv.FormatUint(d.Limit, 10))
	h.Set("RateLimit-Remaining", strconv.FormatUint(d.Remaining, 10))
	h.Set("RateLimit-Reset", strconv.FormatInt(reset, 10))
	if d.Policy.Limit > 0 {
		policy := fmt.Sprintf("%d;w=%d", d.Policy.Limit, wholeSeconds(d.Policy.Period))
		if d.Policy.Burst > 0 {
			policy += fmt.Sprintf(";burst=%d", d.Policy.Burst)
		}
		h.Set("RateLimit-Policy", policy)
	}
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(d.RetryAfterSeconds(), 10))
	}
	return h
}

// wholeSeconds is d in whole seconds, rounded up.
func wholeSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

func decision(r *ratelimitv1.CheckResponse, policy Policy) Decision {
	return Decision{
		Allowed: r.GetAllowed(), Limit: r.GetLimit(), Remaining: r.GetRemaining(),
		ResetAfter: r.GetResetAfter().AsDuration(), RetryAfter: r.GetRetryAfter().AsDuration(),
		Policy: policy,
	}
}

// RateLimiter checks keys against policies.
type RateLimiter struct {
	c    *Client
	stub ratelimitv1.RateLimiterClient
}

// A CheckOption changes a Check: Cost, Peek, FailOpen, FailClosed, FallbackAfter.
type CheckOption interface{ applyCheck(*checkSettings) }

type checkSettings struct {
	cost          uint32
	peek          bool
	onUnavailable int // 0: return the error; allow or deny
	fallbackAfter time.Duration
}

const (
	allow = 1 + iota
	deny
)

type checkOption func(*checkSettings)

func (o checkOption) applyCheck(s *checkSettings) { o(s) }

// Cost is the units a check consumes (default 1).
func Cost(units uint32) CheckOption {
	return checkOption(func(s *checkSettings) { s.cost = units })
}

// Peek answers whether the check would be admitted, consuming nothing.
func Peek() CheckOption {
	return checkOption(func(s *checkSettings) { s.peek = true })
}

// FailOpen admits on its own (Decision.Fallback) when the server has no answer within
// the fallback budget (DefaultFallbackAfter, 200 ms, or FallbackAfter), or answers that it
// or its Redis is unavailable or that it is overloaded (see FallsBack): an outage of the
// limiter is not an outage of what it protects. Other errors are returned as usual.
func FailOpen() CheckOption {
	return checkOption(func(s *checkSettings) { s.onUnavailable = allow })
}

// FailClosed is FailOpen, refusing instead: for the error's RetryAfter, else a second.
func FailClosed() CheckOption {
	return checkOption(func(s *checkSettings) { s.onUnavailable = deny })
}

// FallbackOption is FallbackAfter's: both a CheckOption and a ComputeOption.
type FallbackOption struct{ d time.Duration }

// FallbackAfter is how long a recipe waits for the server, all its calls together, before
// it falls back (a check with FailOpen or FailClosed, GetOrCompute): DefaultFallbackAfter
// (200 ms) unless set.
func FallbackAfter(d time.Duration) FallbackOption { return FallbackOption{d} }

func (o FallbackOption) applyCheck(s *checkSettings)     { s.fallbackAfter = o.d }
func (o FallbackOption) applyCompute(s *computeSettings) { s.fallbackAfter = o.d }

// Check answers whether Cost (1) units for key are admitted under policy, consuming them
// if so. Without FailOpen or FailClosed a failure is returned as an *Error, after the
// client's timeout at most; with either, the check waits FallbackAfter (200 ms) at most
// and then decides on its own (Decision.Fallback) when the server had no answer or
// answered that it cannot serve (FallsBack). The check goes over the client's shared
// CheckStream unless WithStreamChecks(false) (see checkstream.go): the same answers.
func (r *RateLimiter) Check(ctx context.Context, key string, policy Policy, opts ...CheckOption) (Decision, error) {
	s := checkSettings{cost: 1, fallbackAfter: DefaultFallbackAfter}
	for _, opt := range opts {
		opt.applyCheck(&s)
	}
	request := &ratelimitv1.CheckRequest{Key: key, Policy: policy.message(), Cost: s.cost, Peek: s.peek}
	if s.onUnavailable == 0 {
		response, err := r.decide(ctx, request, 0)
		if err != nil {
			return Decision{}, err
		}
		return decision(response, policy), nil
	}
	response, err := r.decide(ctx, request, positive(s.fallbackAfter, DefaultFallbackAfter))
	if err != nil {
		if !FallsBack(err) {
			return Decision{}, err
		}
		return fallbackDecision(policy, s.cost, err, s.onUnavailable == allow), nil
	}
	return decision(response, policy), nil
}

// decide is request's answer with the client's deadline (or budget, when > 0: see
// unary), over the client's stream of checks or, without one, as a unary Check.
func (r *RateLimiter) decide(ctx context.Context, request *ratelimitv1.CheckRequest, budget time.Duration) (*ratelimitv1.CheckResponse, error) {
	if r.c.checks == nil {
		return unary(ctx, r.c, r.stub.Check, request, 0, budget)
	}
	ctx, cancel := r.c.callContext(ctx, 0, budget)
	defer cancel()
	return r.c.checks.check(ctx, request)
}

// fallbackDecision is what FailOpen (allowed) or FailClosed decides after err, as the
// server's own fail-open mode answers.
func fallbackDecision(policy Policy, cost uint32, err error, allowed bool) Decision {
	capacity := policy.Burst
	if capacity == 0 {
		capacity = policy.Limit
	}
	d := Decision{Allowed: allowed, Limit: capacity, Fallback: true, Policy: policy}
	if allowed {
		if capacity > uint64(cost) {
			d.Remaining = capacity - uint64(cost)
		}
		return d
	}
	d.RetryAfter = time.Second
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		d.RetryAfter = e.RetryAfter
	}
	d.ResetAfter = d.RetryAfter
	return d
}

func positive(d, otherwise time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return otherwise
}

// KeyPolicy is one check of CheckMany.
type KeyPolicy struct {
	Key    string
	Policy Policy
}

// CheckMany makes several checks of cost 1 at once: whether all were admitted, and each
// decision in order. With allOrNothing nothing is consumed unless all are admitted.
func (r *RateLimiter) CheckMany(ctx context.Context, checks []KeyPolicy, allOrNothing bool) (bool, []Decision, error) {
	request := &ratelimitv1.CheckManyRequest{AllOrNothing: allOrNothing}
	for _, check := range checks {
		request.Checks = append(request.Checks,
			&ratelimitv1.CheckRequest{Key: check.Key, Policy: check.Policy.message(), Cost: 1})
	}
	response, err := call(ctx, r.c, r.stub.CheckMany, request)
	if err != nil {
		return false, nil, err
	}
	decisions := make([]Decision, len(response.GetResults()))
	for i, result := range response.GetResults() {
		decisions[i] = decision(result, checks[i].Policy)
	}
	return response.GetAllowed(), decisions, nil
}

// Reset forgets what key has consumed under policy.
func (r *RateLimiter) Reset(ctx context.Context, key string, policy Policy) error {
	_, err := call(ctx, r.c, r.stub.Reset, &ratelimitv1.ResetRequest{Key: key, Policy: policy.message()})
	return err
}

// CheckStream opens the RateLimiter.CheckStream stream as the generated stub does (many
// checks over one stream, answered by id: see the contract), with the client's API key.
// It lasts until ctx ends; its errors are gRPC statuses (read them with errors.As after
// passing them through AsError).
func (r *RateLimiter) CheckStream(ctx context.Context) (grpc.BidiStreamingClient[ratelimitv1.CheckStreamRequest, ratelimitv1.CheckStreamResponse], error) {
	stream, err := r.stub.CheckStream(ctx, r.c.callOpts...)
	return stream, asError(err)
}

// AsError is err as an *Error when it carries a gRPC status (for errors of the generated
// stubs, or of CheckStream's stream), else err unchanged.
func AsError(err error) error { return asError(err) }
