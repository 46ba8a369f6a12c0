package patterns_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
)

func ExampleNewClient() {
	client, err := patterns.NewClient("patterns.internal:50051",
		patterns.WithTLSFiles("/etc/patterns/ca.pem", "", ""), // a private CA; "" for the system's roots
		patterns.WithAPIKey("the team's key"),
		patterns.WithTimeout(2*time.Second), // for calls whose context has no deadline
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
}

func ExampleFromEnv() {
	// PATTERNS_TARGET, PATTERNS_API_KEY, PATTERNS_CA_FILE, PATTERNS_CERT_FILE, PATTERNS_KEY_FILE
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	visitors, err := client.Counter().Count(context.Background(), "visitors:2026-12-02")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(visitors)
}

func ExampleRateLimiter_Check() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// Admit when the limiter cannot answer within 200 ms: its outage is not the API's.
	decision, err := client.RateLimiter().Check(context.Background(), "ip:203.0.113.7",
		patterns.GCRA(100, time.Minute), patterns.FailOpen())
	if err != nil {
		log.Fatal(err) // a refused argument or key: not covered by the fallback
	}
	if !decision.Allowed {
		fmt.Printf("429, retry after %v\n", decision.RetryAfter)
	}
}

func ExampleError() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	_, err = client.RateLimiter().Check(context.Background(), "", patterns.GCRA(1, time.Second))
	var e *patterns.Error
	if errors.As(err, &e) && e.Code == codes.InvalidArgument {
		fmt.Println(e.FieldViolations[0].Field, e.Reason) // key INVALID_ARGUMENT
	}
}

func ExampleFallsBack() {
	fmt.Println(patterns.FallsBack(status.Error(codes.Unavailable, "Redis is unreachable")))
	fmt.Println(patterns.FallsBack(status.Error(codes.InvalidArgument, "key: must not be empty")))
	// Output:
	// true
	// false
}

func ExampleLocks_Hold() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	held, err := client.Locks().Hold(context.Background(), "nightly-report", 10*time.Second)
	if errors.Is(err, patterns.ErrNotAcquired) {
		return // another process is on it
	}
	if err != nil {
		log.Fatal(err)
	}
	defer held.Release()
	// The server renews the lease while this runs; held.Context() ends if it is lost.
	select {
	case <-held.Lost():
		log.Printf("lost the lock: %v", held.Err())
	case <-time.After(time.Minute): // the work, passing held.FencingToken to what it writes
	}
}

func ExampleLocks_Do() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	err = client.Locks().Do(context.Background(), "nightly-report", 10*time.Second,
		func(ctx context.Context, held *patterns.Held) error {
			fmt.Println("fencing token", held.FencingToken)
			return nil // ctx is cancelled if the lock is lost
		}, patterns.Wait(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleEvents_Subscribe() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	subscription := client.Events().Subscribe(ctx, "orders")
	defer subscription.Close()
	if err := subscription.WaitSubscribed(ctx); err != nil {
		log.Fatal(err)
	}
	for item := range subscription.Items() {
		switch item := item.(type) {
		case patterns.Event:
			fmt.Printf("%s: %s\n", item.Channel, item.Payload)
		case patterns.Gap:
			log.Printf("missed events (%v): reloading", item.Err)
		}
	}
	log.Print(subscription.Err()) // what ended it, if anything did
}

func ExampleCache_GetOrCompute() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	page, err := client.Cache().GetOrCompute(context.Background(), "page:/pricing",
		func(ctx context.Context) ([]byte, error) { return []byte("<html>…</html>"), nil },
		patterns.TTL(time.Minute), patterns.Tags("pages"))
	if err != nil {
		log.Fatal(err) // compute's own error, or a cache error no fallback covers
	}
	fmt.Println(len(page))
}

func ExampleLeaderboard_Board() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	board := client.Leaderboard().Board("golf")
	board.Order, board.Period = patterns.LowFirst, patterns.PeriodWeekly // fewest strokes first, weekly
	if _, err := board.SubmitBest(ctx, "ann", 72); err != nil {
		log.Fatal(err)
	}
	top, err := board.Top(ctx, 10, 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range top.Standings {
		fmt.Println(s.Rank, s.Member, s.Score)
	}
}

func ExampleStreams_Consume() {
	client, err := patterns.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	if _, err := client.Streams().Append(ctx, "orders", []byte(`{"id": 42}`), patterns.AppendOptions{
		Headers: map[string]string{"type": "created"}, IdempotencyKey: "order-42",
	}); err != nil {
		log.Fatal(err)
	}
	consumer := client.Streams().Consume(ctx, patterns.ConsumeOptions{
		Stream: "orders", Group: "billing", Consumer: "billing-1",
	})
	defer consumer.Close()
	for message := range consumer.Messages() {
		if err := bill(message.Payload); err != nil { // bill is idempotent: at least once
			message.Nack(10 * time.Second) // again in 10 s, to any consumer of the group
			continue
		}
		message.Ack()
	}
	log.Print(consumer.Err()) // what ended it: a failure retrying cannot cure
}

func bill([]byte) error { return nil }
