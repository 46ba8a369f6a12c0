// Command go-consumer uses every service and recipe of the Go client of patterns-server as
// a team's program would, installed the way the README says, and prints one line per
// step. It reads PATTERNS_TARGET, PATTERNS_API_KEY, PATTERNS_CA_FILE, PATTERNS_CERT_FILE
// and PATTERNS_KEY_FILE. A line starting with "? " asks whoever runs it to do something
// to the server (restart, pause, resume) and to answer a line on stdin when done.
// Logs go to stderr; stdout holds only the steps' lines.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
)

var stdin = bufio.NewReader(os.Stdin)

func main() {
	log.SetFlags(0)
	log.SetPrefix("go-consumer: ")
	client, err := patterns.FromEnv()
	check(err)
	defer client.Close()
	run := runID()
	ctx := context.Background()

	// Rate limiting: GCRA, 3 per 60 s, checked 4 times on a fresh key.
	limiter := client.RateLimiter()
	policy := patterns.GCRA(3, time.Minute)
	var allowed [4]bool
	var refused patterns.Decision
	for i := range allowed {
		refused, err = limiter.Check(ctx, "user:"+run, policy)
		check(err)
		allowed[i] = refused.Allowed
	}
	fmt.Println("ratelimit:", allowed[0], allowed[1], allowed[2], allowed[3], "retry_after>0", refused.RetryAfter > 0)

	// A refused argument, read through the client's error type.
	_, err = limiter.Check(ctx, "", policy)
	var invalid *patterns.Error
	if !errors.As(err, &invalid) || len(invalid.FieldViolations) == 0 {
		log.Fatalf("an empty key: %v", err)
	}
	fmt.Println("error:", invalid.CodeName(), invalid.FieldViolations[0].Field, invalid.Reason)

	// Distinct counts.
	counter := client.Counter()
	_, err = counter.Add(ctx, "visitors:"+run, []string{"a", "b", "a"})
	check(err)
	count, err := counter.Count(ctx, "visitors:"+run)
	check(err)
	fmt.Println("counter:", count)

	// A leaderboard.
	board := client.Leaderboard().Board("chess:" + run)
	_, err = board.Submit(ctx, "ann", 10)
	check(err)
	_, err = board.Submit(ctx, "bob", 5)
	check(err)
	top, err := board.Top(ctx, 10, 0)
	check(err)
	size, err := board.Size(ctx)
	check(err)
	fmt.Println("leaderboard:", top.Standings[0].Member, top.Standings[0].Rank, size)

	// Sessions.
	sessions := client.Sessions()
	session, err := sessions.Create(ctx, patterns.NewSession{UserID: "u:" + run, TTL: 30 * time.Minute})
	check(err)
	_, found, err := sessions.Get(ctx, session.ID)
	check(err)
	_, err = sessions.Destroy(ctx, session.ID)
	check(err)
	_, foundAfter, err := sessions.Get(ctx, session.ID)
	check(err)
	fmt.Println("sessions:", found, foundAfter)

	// Cache-aside with the fill lease: computed once. A budget of seconds rather than the
	// default 200 ms: on a busy machine a slow answer would fall back to computing, which is
	// not what these lines are about (the paused server's lines below are).
	cache := client.Cache()
	patient := patterns.FallbackAfter(5 * time.Second)
	computed := 0
	compute := func(context.Context) ([]byte, error) {
		computed++
		return []byte("v1"), nil
	}
	var value []byte
	for range 2 {
		value, err = cache.GetOrCompute(ctx, "page:"+run, compute, patterns.TTL(time.Minute), patient)
		check(err)
	}
	fmt.Println("cache:", string(value), "computed", computed)

	// A compute that fails: its error comes back, and the lease is given back, so the next
	// caller computes at once rather than waiting out the lease.
	broken := errors.New("the source is down")
	_, err = cache.GetOrCompute(ctx, "report:"+run, func(context.Context) ([]byte, error) { return nil, broken }, patient)
	sameError := err == broken
	started := time.Now()
	_, err = cache.GetOrCompute(ctx, "report:"+run, func(context.Context) ([]byte, error) { return []byte("ok"), nil },
		patterns.Wait(20*time.Second), patient)
	check(err)
	fmt.Println("cache failed compute:", sameError, time.Since(started) < 10*time.Second)

	// A lock held for a block of work, free once it is released.
	locks := client.Locks()
	ran, fenced := false, false
	err = locks.Do(ctx, "report:"+run, 3*time.Second, func(ctx context.Context, held *patterns.Held) error {
		ran, fenced = true, held.FencingToken > 0
		return nil
	})
	check(err)
	state, err := locks.Inspect(ctx, "report:"+run)
	check(err)
	fmt.Println("lock:", ran, fenced, "free", !state.Held)

	// A lock force-released while held: the holder learns it at the server's next renewal.
	held, err := locks.Hold(ctx, "job:"+run, 3*time.Second)
	check(err)
	_, err = locks.ForceRelease(ctx, "job:"+run)
	check(err)
	lost := false
	select {
	case <-held.Lost():
		lost = true
	case <-time.After(15 * time.Second):
	}
	held.Release()
	fmt.Println("lock lost:", lost)

	// A subscription that survives a restart of the server, with a gap.
	events := client.Events()
	subscription := events.Subscribe(ctx, "orders:"+run)
	defer subscription.Close()
	wait, stop := context.WithTimeout(ctx, 30*time.Second)
	check(subscription.WaitSubscribed(wait))
	stop()
	_, err = events.Publish(ctx, "orders:"+run, []byte("1"))
	check(err)
	first := next(ctx, subscription)
	fmt.Println("events:", payload(first))
	ask("restart")
	gap := next(ctx, subscription)
	_, isGap := gap.(patterns.Gap)
	_, err = events.Publish(ctx, "orders:"+run, []byte("2"))
	check(err)
	second := next(ctx, subscription)
	kind := "event"
	if isGap {
		kind = "gap"
	}
	fmt.Println("events after restart:", kind, payload(second))

	// A paused server: the recipes fall back within their 200 ms budget.
	ask("pause")
	started = time.Now()
	decision, err := limiter.Check(ctx, "paused:"+run, policy, patterns.FailOpen(),
		patterns.FallbackAfter(200*time.Millisecond))
	check(err)
	checkTook := time.Since(started)
	fmt.Println("fail-open:", decision.Allowed, decision.Fallback)
	started = time.Now()
	value, err = cache.GetOrCompute(ctx, "paused:"+run, func(context.Context) ([]byte, error) { return []byte("v3"), nil },
		patterns.FallbackAfter(200*time.Millisecond))
	check(err)
	cacheTook := time.Since(started)
	fmt.Println("cache fallback:", string(value))
	fmt.Println("fallbacks took", checkTook.Milliseconds(), cacheTook.Milliseconds())
	ask("resume")
	fmt.Println("done")
}

// next is the subscription's next item, waiting generously: a restarted server can take
// several seconds to come back.
func next(ctx context.Context, subscription *patterns.Subscription) patterns.Item {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	item, err := subscription.Next(ctx)
	check(err)
	return item
}

func payload(item patterns.Item) string {
	event, ok := item.(patterns.Event)
	if !ok {
		log.Fatalf("expected an event, got %#v", item)
	}
	return string(event.Payload)
}

// ask prints "? <what>" and waits for the line that says it was done.
func ask(what string) {
	fmt.Println("?", what)
	if _, err := stdin.ReadString('\n'); err != nil {
		log.Fatalf("no answer to %q: %v", what, err)
	}
}

func runID() string {
	b := make([]byte, 6)
	_, err := rand.Read(b)
	check(err)
	return hex.EncodeToString(b)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
