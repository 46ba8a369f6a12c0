// Package patterns is the Go client of patterns-server: Redis patterns (rate limiting,
// distinct counting, pub/sub events, locks, cache-aside, leaderboards, sessions) served
// over gRPC.
//
// One Client holds one connection; its services hang off it (RateLimiter, Counter,
// Events, Locks, Cache, Leaderboard, Sessions), each method taking a context first and
// returning (T, error):
//
//	client, err := patterns.NewClient("localhost:50051")
//	if err != nil { ... }
//	defer client.Close()
//	decision, err := client.RateLimiter().Check(ctx, "user:42", patterns.GCRA(100, time.Minute))
//
// NewClient takes options: WithTimeout (the deadline of a call whose context has none;
// 5 s by default), WithAPIKey (sent only over TLS), WithTLS or WithTLSFiles (a private
// CA, a client certificate for mutual TLS, or the system's roots), WithConn (a connection
// made elsewhere), WithDialOptions, WithStreamChecks. FromEnv reads the PATTERNS_*
// environment variables.
//
// Every failure of a call is an *Error: the gRPC code and message, and the rich details
// the server attaches (the ErrorInfo Reason, the BadRequest FieldViolations, the
// RetryInfo RetryAfter). Read it with errors.As.
//
// Beyond the calls, five recipes with the same semantics as the Python client's:
//
//   - RateLimiter.Check sends its checks, from every goroutine, as messages of one
//     RateLimiter.CheckStream that the client shares (WithStreamChecks(false): a unary
//     Check each), which the server decides together for less CPU per decision: the same
//     decisions, errors, deadlines and fallbacks as unary Checks.
//   - RateLimiter.Check with FailOpen or FailClosed decides on its own (Decision.Fallback)
//     when the server has no answer within FallbackAfter (200 ms) or says it cannot serve
//     (see FallsBack).
//   - Locks.Hold (and Locks.Do) holds a lock for a piece of work over the Locker.Hold
//     stream: renewed by the server, released at the end, its Context cancelled and its
//     Lost channel closed if the lease is lost meanwhile.
//   - Events.Subscribe delivers Events, resubscribing after an interruption with backoff
//     (at least the server's RetryInfo) and delivering a Gap once back; WaitSubscribed
//     waits until the server confirms the subscription.
//   - Cache.GetOrCompute is cache-aside with the fill lease: one caller of the fleet
//     computes a cold key while the others wait for its value; a failed compute gives the
//     lease back; a cache that cannot answer within FallbackAfter is bypassed.
//
// The generated stubs are in the packages under this one (ratelimitv1, lockv1, ...), for
// what the Client does not wrap; Client.Conn gives its connection to them.
package patterns
