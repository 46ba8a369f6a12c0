package patterns_test

// Checks over one shared CheckStream, against the live server of PATTERNS_TARGET, whose
// Prometheus metrics (PATTERNS_METRICS_URL) say which RPCs the client made. Other
// languages' tests use that server too, one after the other: the tests compare the
// metrics before and after.

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
	ratelimitv1 "github.com/patterns-server/patterns-server/clients/go/patterns/ratelimit/v1"
)

const (
	concurrent         = 64
	limit              = 10
	rateLimiterService = "patterns.ratelimit.v1.RateLimiter"
)

// An hour's exact window: no window rolls over while a test runs.
var hourly = patterns.SlidingWindowLog(limit, time.Hour)

// sample is one line of a Prometheus scrape.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads the live server's metrics.
func scrape(t *testing.T) []sample {
	t.Helper()
	url := os.Getenv("PATTERNS_METRICS_URL")
	if url == "" {
		t.Fatal("PATTERNS_METRICS_URL is unset: these tests need the live server's metrics")
	}
	response, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	var samples []sample
	lines := bufio.NewScanner(response.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		match := sampleLine.FindStringSubmatch(lines.Text())
		if match == nil {
			continue
		}
		value, err := strconv.ParseFloat(match[3], 64)
		if err != nil {
			continue
		}
		labels := map[string]string{}
		for _, pair := range labelPair.FindAllStringSubmatch(match[2], -1) {
			labels[pair[1]] = pair[2]
		}
		samples = append(samples, sample{match[1], labels, value})
	}
	if err := lines.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

// total is the sum of the samples named name whose labels include labels.
func total(samples []sample, name string, labels map[string]string) float64 {
	sum := 0.0
	for _, s := range samples {
		if s.name != name {
			continue
		}
		matches := true
		for k, v := range labels {
			matches = matches && s.labels[k] == v
		}
		if matches {
			sum += s.value
		}
	}
	return sum
}

// rpcs is what the metrics say of the rate limiter's calls: unary Checks made (whatever
// their status), CheckStreams open, and CheckStreams ended.
type rpcs struct{ checks, streamsOpen, streamsEnded float64 }

func rateLimiterRPCs(t *testing.T) rpcs {
	t.Helper()
	samples := scrape(t)
	method := func(name string) map[string]string {
		return map[string]string{"service": rateLimiterService, "method": name}
	}
	return rpcs{
		checks:       total(samples, "patterns_rpcs_total", method("Check")),
		streamsOpen:  total(samples, "patterns_streams_open", method("CheckStream")),
		streamsEnded: total(samples, "patterns_rpcs_total", method("CheckStream")),
	}
}

// noStreamOpen waits until the server has seen every earlier CheckStream end (the
// clients of earlier tests are closed, but the server learns it a moment later).
func noStreamOpen(t *testing.T) rpcs {
	t.Helper()
	var now rpcs
	eventually(t, "no CheckStream open", func() bool {
		now = rateLimiterRPCs(t)
		return now.streamsOpen == 0
	})
	return now
}

// together runs check n times at once, and returns its decisions.
func together(n int, check func() (patterns.Decision, error)) ([]patterns.Decision, []error) {
	start := make(chan struct{})
	decisions, errs := make([]patterns.Decision, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			decisions[i], errs[i] = check()
		})
	}
	close(start)
	wg.Wait()
	return decisions, errs
}

// exactlyTheLimit fails the test unless decisions admitted exactly limit, on the server's word.
func exactlyTheLimit(t *testing.T, decisions []patterns.Decision, errs []error) {
	t.Helper()
	var remaining []uint64
	for i, d := range decisions {
		if errs[i] != nil {
			t.Fatalf("check %d: %v", i, errs[i])
		}
		if d.Fallback {
			t.Fatalf("check %d fell back: %+v", i, d)
		}
		if d.Allowed {
			remaining = append(remaining, d.Remaining)
		}
	}
	slices.Sort(remaining)
	if want := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(remaining, want) {
		t.Errorf("admitted with remaining %v, want %v", remaining, want)
	}
}

func TestConcurrentChecksGoOverOneStreamAndAdmitExactlyTheLimit(t *testing.T) {
	before := noStreamOpen(t)
	client, err := patterns.FromEnv(patterns.WithTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	key := fresh("one")
	decisions, errs := together(concurrent, func() (patterns.Decision, error) {
		return client.RateLimiter().Check(context.Background(), key, hourly)
	})
	exactlyTheLimit(t, decisions, errs)
	if open := rateLimiterRPCs(t); open.streamsOpen != 1 || open.checks != before.checks {
		t.Errorf("while open: %+v, before %+v: want one stream, no unary Check", open, before)
	}
	client.Close()
	var after rpcs
	eventually(t, "the stream ended with Close", func() bool {
		after = rateLimiterRPCs(t)
		return after.streamsOpen == 0 && after.streamsEnded > before.streamsEnded
	})
	if after.streamsEnded != before.streamsEnded+1 || after.checks != before.checks {
		t.Errorf("after Close: %+v, before %+v: want one stream ended, no unary Check", after, before)
	}
}

func TestWithStreamChecksOffEveryCheckIsAUnaryCheck(t *testing.T) {
	before := noStreamOpen(t)
	limiter := live(t, patterns.WithStreamChecks(false)).RateLimiter()
	key := fresh("unary")
	for range 5 {
		if _, err := limiter.Check(context.Background(), key, hourly); err != nil {
			t.Fatal(err)
		}
	}
	after := rateLimiterRPCs(t)
	if after.checks != before.checks+5 || after.streamsOpen != 0 || after.streamsEnded != before.streamsEnded {
		t.Errorf("after 5 checks: %+v, before %+v: want 5 unary Checks, no stream", after, before)
	}
}

func TestTheStreamAnswersAsUnaryChecksDo(t *testing.T) {
	ctx := context.Background()
	stream, unary := live(t).RateLimiter(), live(t, patterns.WithStreamChecks(false)).RateLimiter()
	// The same history on two keys: the same answers (but for the times they were made).
	history := []struct {
		cost uint32
		peek bool
	}{{1, false}, {1, true}, {2, false}, {1, false}, {1, false}}
	policies := []patterns.Policy{
		patterns.FixedWindow(3, time.Hour), patterns.SlidingWindowLog(3, time.Hour),
		patterns.SlidingWindowCounter(3, time.Hour), patterns.TokenBucket(3, time.Hour, 4),
		patterns.GCRA(3, time.Hour),
	}
	for _, policy := range policies {
		keys := []string{fresh("stream"), fresh("unary")}
		for _, step := range history {
			var got [2]patterns.Decision
			for i, limiter := range []*patterns.RateLimiter{stream, unary} {
				opts := []patterns.CheckOption{patterns.Cost(step.cost)}
				if step.peek {
					opts = append(opts, patterns.Peek())
				}
				got[i] = must[patterns.Decision](t)(limiter.Check(ctx, keys[i], policy, opts...))
			}
			same := func(d patterns.Decision) []any {
				return []any{d.Allowed, d.Limit, d.Remaining, d.RetryAfter > 0, d.Fallback, d.Policy}
			}
			if !slices.Equal(same(got[0]), same(got[1])) {
				t.Errorf("%+v, step %+v: stream %+v, unary %+v", policy, step, got[0], got[1])
			}
		}
	}
	// The same errors, with FailOpen too (a wrong argument is not a fallback's).
	bad := []struct {
		key    string
		policy patterns.Policy
	}{{"", hourly}, {"k", patterns.FixedWindow(0, time.Hour)}, {"k", patterns.GCRA(3, 0)}}
	var fields []string
	for _, b := range bad {
		var errs [2]*patterns.Error
		for i, limiter := range []*patterns.RateLimiter{stream, unary} {
			_, err := limiter.Check(ctx, b.key, b.policy, patterns.FailOpen(), patterns.FallbackAfter(10*time.Second))
			if !errors.As(err, &errs[i]) {
				t.Fatalf("not an *Error: %v", err)
			}
		}
		s, u := errs[0], errs[1]
		if s.Code != u.Code || s.Message != u.Message || s.Reason != u.Reason || s.RetryAfter != u.RetryAfter ||
			!slices.Equal(s.FieldViolations, u.FieldViolations) {
			t.Errorf("stream %+v, unary %+v", s, u)
		}
		if st, ok := status.FromError(s); !ok || st.Code() != codes.InvalidArgument || len(st.Details()) != len(status.Convert(u).Details()) {
			t.Errorf("the stream error's status: %v", st)
		}
		if len(s.FieldViolations) == 1 {
			fields = append(fields, s.FieldViolations[0].Field)
		}
	}
	if want := []string{"key", "policy.limit", "policy.period"}; !slices.Equal(fields, want) {
		t.Errorf("fields %v, want %v", fields, want)
	}
}

// viaProxy is a stream client of the live server through a proxy that can stall and cut.
func viaProxy(t *testing.T, opts ...patterns.Option) (*cuttable, *patterns.Client) {
	t.Helper()
	live(t) // fails without PATTERNS_TARGET
	proxy := newCuttable(t, os.Getenv("PATTERNS_TARGET"))
	return proxy, clientOf(t, proxy.listener.Addr().String(), opts...)
}

func TestACutStreamFailsItsChecksAndTheNextCheckOpensAnother(t *testing.T) {
	before := noStreamOpen(t)
	proxy, client := viaProxy(t, patterns.WithTimeout(30*time.Second))
	ctx, limiter := context.Background(), client.RateLimiter()
	must[patterns.Decision](t)(limiter.Check(ctx, fresh("warm"), hourly)) // the stream open

	// Two checks in progress when the connection is cut: one without a fallback, one
	// with FailOpen and a budget far longer than the test.
	proxy.stall()
	var failed error
	var fellBack patterns.Decision
	var wg sync.WaitGroup
	wg.Go(func() { _, failed = limiter.Check(ctx, fresh("cut"), hourly) })
	wg.Go(func() {
		var err error
		fellBack, err = limiter.Check(ctx, fresh("cut"), hourly, patterns.FailOpen(), patterns.FallbackAfter(time.Minute))
		if err != nil {
			t.Error(err)
		}
	})
	eventually(t, "two checks sent", func() bool { return patterns.ChecksInProgress(client) == 2 })
	cutAt := time.Now()
	proxy.cut()
	proxy.resume()
	wg.Wait()
	if took := time.Since(cutAt); took > fallbackBound {
		t.Errorf("the checks in progress took %v to end after the cut", took)
	}
	var e *patterns.Error
	if !errors.As(failed, &e) || e.CodeName() != "UNAVAILABLE" {
		t.Errorf("the check without a fallback: %v", failed)
	}
	if !fellBack.Fallback || !fellBack.Allowed {
		t.Errorf("the fail-open check: %+v", fellBack)
	}

	// The next check opens a new stream, and is answered by the server (the client may
	// take a moment to connect again).
	key := fresh("after")
	eventually(t, "a check answered after the cut", func() bool {
		d, err := limiter.Check(ctx, key, hourly, patterns.FailClosed(), patterns.FallbackAfter(5*time.Second))
		return err == nil && !d.Fallback
	})
	eventually(t, "the server saw the cut stream end", func() bool {
		return rateLimiterRPCs(t).streamsEnded == before.streamsEnded+1
	})
	if now := rateLimiterRPCs(t); now.streamsOpen != 1 || now.checks != before.checks {
		t.Errorf("after the cut: %+v, before %+v: want a new stream open, no unary Check", now, before)
	}
}

func TestLateAnswersAreDroppedAndTheStreamGoesOn(t *testing.T) {
	before := noStreamOpen(t)
	proxy, client := viaProxy(t, patterns.WithTimeout(30*time.Second))
	ctx, limiter := context.Background(), client.RateLimiter()
	must[patterns.Decision](t)(limiter.Check(ctx, fresh("warm"), hourly))
	proxy.stall()
	stale, errs := together(5, func() (patterns.Decision, error) {
		return limiter.Check(ctx, fresh("stale"), hourly, patterns.FailClosed(), patterns.FallbackAfter(300*time.Millisecond))
	})
	proxy.resume()
	for i, d := range stale {
		if errs[i] != nil || !d.Fallback || d.Allowed {
			t.Errorf("a check while stalled: %+v %v", d, errs[i])
		}
	}
	// Their answers come now, and are dropped: each later check of a fresh key gets its
	// own (4 left of 5), not a stale one.
	for range 20 {
		d := must[patterns.Decision](t)(limiter.Check(ctx, fresh("later"), patterns.FixedWindow(5, time.Hour)))
		if !d.Allowed || d.Remaining != 4 || d.Fallback {
			t.Errorf("a later check: %+v", d)
		}
	}
	if now := rateLimiterRPCs(t); now.streamsOpen != 1 || now.streamsEnded != before.streamsEnded || now.checks != before.checks {
		t.Errorf("%+v, before %+v: want the one stream, which the stall did not end", now, before)
	}
}

func TestChecksBeyondTheStreams1000InProgressGoUnary(t *testing.T) {
	before := noStreamOpen(t)
	proxy, client := viaProxy(t, patterns.WithTimeout(60*time.Second))
	ctx, limiter := context.Background(), client.RateLimiter()
	must[patterns.Decision](t)(limiter.Check(ctx, fresh("warm"), hourly))
	// While nothing gets through, 1,000 checks wait on the stream, and the 100 beyond
	// go as unary Checks (rather than be refused OVERLOADED by the server).
	proxy.stall()
	key := fresh("many")
	var wg sync.WaitGroup
	var decisions []patterns.Decision
	var errs []error
	wg.Go(func() {
		decisions, errs = together(1100, func() (patterns.Decision, error) { return limiter.Check(ctx, key, hourly) })
	})
	eventually(t, "1,000 checks sent", func() bool { return patterns.ChecksInProgress(client) == 1000 })
	proxy.resume()
	wg.Wait()
	admitted := 0
	for i, d := range decisions {
		if errs[i] != nil || d.Fallback {
			t.Fatalf("check %d: %+v %v", i, d, errs[i])
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != limit {
		t.Errorf("admitted %d", admitted)
	}
	if now := rateLimiterRPCs(t); now.checks != before.checks+100 || now.streamsOpen != 1 {
		t.Errorf("%+v, before %+v: want 100 unary Checks, one stream", now, before)
	}
}

func TestCloseEndsTheStreamItsChecksAndItsGoroutines(t *testing.T) {
	noStreamOpen(t)
	live(t)
	proxy := newCuttable(t, os.Getenv("PATTERNS_TARGET"))
	goroutines := runtime.NumGoroutine()
	client, err := patterns.NewClient(proxy.listener.Addr().String(), patterns.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must[patterns.Decision](t)(client.RateLimiter().Check(ctx, fresh("warm"), hourly))
	if open := rateLimiterRPCs(t).streamsOpen; open != 1 {
		t.Errorf("%v CheckStreams open", open)
	}
	proxy.stall()
	ended := make(chan error)
	go func() {
		_, err := client.RateLimiter().Check(ctx, fresh("waiting"), hourly)
		ended <- err
	}()
	eventually(t, "the check sent", func() bool { return patterns.ChecksInProgress(client) == 1 })
	closedAt := time.Now()
	client.Close()
	select {
	case err := <-ended:
		var e *patterns.Error
		if !errors.As(err, &e) || e.CodeName() != "CANCELLED" || !errors.Is(err, context.Canceled) {
			t.Errorf("the check in progress at Close: %v", err)
		}
	case <-time.After(fallbackBound):
		t.Fatal("the check in progress still waits after Close")
	}
	if took := time.Since(closedAt); took > fallbackBound {
		t.Errorf("Close took %v", took)
	}
	// A check after Close is a unary call on a closed connection.
	if _, err := client.RateLimiter().Check(ctx, "k", hourly); status.Code(err) != codes.Canceled {
		t.Errorf("a check after Close: %v", err)
	}
	proxy.resume()
	eventually(t, "the goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= goroutines+2
	})
	eventually(t, "the server saw the stream end", func() bool { return rateLimiterRPCs(t).streamsOpen == 0 })
}

// olderServer is a RateLimiter server in front of the live one that answers Check (by
// asking the live server) but refuses every CheckStream with refusal, as a server older
// than CheckStream (UNIMPLEMENTED) or one at its limit of streams (RESOURCE_EXHAUSTED)
// does. It counts the streams it was asked for.
type olderServer struct {
	ratelimitv1.UnimplementedRateLimiterServer
	live    ratelimitv1.RateLimiterClient
	refusal *status.Status
	streams atomic.Int32
}

func (s *olderServer) Check(ctx context.Context, request *ratelimitv1.CheckRequest) (*ratelimitv1.CheckResponse, error) {
	return s.live.Check(ctx, request)
}

func (s *olderServer) CheckStream(grpc.BidiStreamingServer[ratelimitv1.CheckStreamRequest, ratelimitv1.CheckStreamResponse]) error {
	s.streams.Add(1)
	return s.refusal.Err()
}

func startOlderServer(t *testing.T, refusal *status.Status) (*olderServer, string) {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := &olderServer{live: ratelimitv1.NewRateLimiterClient(live(t).Conn()), refusal: refusal}
	server := grpc.NewServer()
	ratelimitv1.RegisterRateLimiterServer(server, front)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	return front, listener.Addr().String()
}

func TestARefusedStreamIsAnsweredByUnaryChecks(t *testing.T) {
	exhausted, err := status.New(codes.ResourceExhausted, "too many streams").WithDetails(
		&errdetails.ErrorInfo{Reason: "TOO_MANY_STREAMS"}, &errdetails.RetryInfo{RetryDelay: durationpb.New(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	for name, refusal := range map[string]*status.Status{
		"older": status.New(codes.Unimplemented, "unknown method CheckStream"),
		"full":  exhausted,
	} {
		t.Run(name, func(t *testing.T) {
			front, address := startOlderServer(t, refusal)
			limiter := clientOf(t, address, patterns.WithTimeout(10*time.Second)).RateLimiter()
			key := fresh("refused")
			decisions, errs := together(concurrent, func() (patterns.Decision, error) {
				return limiter.Check(context.Background(), key, hourly)
			})
			exactlyTheLimit(t, decisions, errs)
			if n := front.streams.Load(); n != 1 {
				t.Errorf("%d streams asked for by a burst of checks", n)
			}
			// The next checks go unary: for good after UNIMPLEMENTED, for the refusal's
			// RetryAfter after RESOURCE_EXHAUSTED (then a stream is tried again).
			must[patterns.Decision](t)(limiter.Check(context.Background(), fresh("next"), hourly))
			if n := front.streams.Load(); n != 1 {
				t.Errorf("%d streams asked for by the next check", n)
			}
			if name == "full" {
				time.Sleep(400 * time.Millisecond) // past the refusal's RetryAfter
				must[patterns.Decision](t)(limiter.Check(context.Background(), fresh("later"), hourly))
				if n := front.streams.Load(); n != 2 {
					t.Errorf("%d streams asked for after the refusal's RetryAfter", n)
				}
			} else {
				time.Sleep(1200 * time.Millisecond) // past the default wait after a refusal
				must[patterns.Decision](t)(limiter.Check(context.Background(), fresh("later"), hourly))
				if n := front.streams.Load(); n != 1 {
					t.Errorf("%d streams asked for of a server without CheckStream", n)
				}
			}
		})
	}
}
