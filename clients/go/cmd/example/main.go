// Command example calls every service of patterns-server once, as a team would from Go,
// and prints one line per step. Usage: example [host:port]. The connection comes from the
// environment: PATTERNS_TARGET (host:port, default localhost:50051; an argument wins),
// PATTERNS_API_KEY, PATTERNS_CA_FILE (TLS, trusting that CA), and PATTERNS_CERT_FILE with
// PATTERNS_KEY_FILE (a client certificate, for mutual TLS).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
	cachev1 "github.com/patterns-server/patterns-server/clients/go/patterns/cache/v1"
	counterv1 "github.com/patterns-server/patterns-server/clients/go/patterns/counter/v1"
	eventsv1 "github.com/patterns-server/patterns-server/clients/go/patterns/events/v1"
	leaderboardv1 "github.com/patterns-server/patterns-server/clients/go/patterns/leaderboard/v1"
	lockv1 "github.com/patterns-server/patterns-server/clients/go/patterns/lock/v1"
	ratelimitv1 "github.com/patterns-server/patterns-server/clients/go/patterns/ratelimit/v1"
	sessionv1 "github.com/patterns-server/patterns-server/clients/go/patterns/session/v1"
)

func main() {
	target := os.Getenv("PATTERNS_TARGET")
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	if target == "" {
		target = "localhost:50051"
	}
	conn, err := connect(target, os.Getenv("PATTERNS_API_KEY"), TLSFiles{
		CA: os.Getenv("PATTERNS_CA_FILE"), Cert: os.Getenv("PATTERNS_CERT_FILE"), Key: os.Getenv("PATTERNS_KEY_FILE"),
	})
	check(err)
	defer conn.Close()
	run := newRunID()

	// Every call gets a deadline.
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 5*time.Second)
	}

	// Health: Check, and the first answer of Watch.
	health := healthpb.NewHealthClient(conn)
	ctx, cancel := call()
	h, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	check(err)
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: "patterns.cache.v1.Cache"})
	check(err)
	w, err := watch.Recv()
	check(err)
	cancel()
	fmt.Println("health:", h.GetStatus(), w.GetStatus())

	// RateLimiter: GCRA, 3 per 60 s, checked 4 times; then two policies all or nothing.
	limiter := ratelimitv1.NewRateLimiterClient(conn)
	policy := &ratelimitv1.Policy{
		Algorithm: ratelimitv1.Algorithm_ALGORITHM_GCRA, Limit: 3, Period: durationpb.New(time.Minute),
	}
	allowed := []bool{}
	var retryAfter time.Duration
	for i := 0; i < 4; i++ {
		ctx, cancel := call()
		r, err := limiter.Check(ctx, &ratelimitv1.CheckRequest{Key: "user:" + run, Policy: policy})
		cancel()
		check(err)
		allowed = append(allowed, r.GetAllowed())
		retryAfter = r.GetRetryAfter().AsDuration()
	}
	fmt.Println("ratelimit check:", allowed, "retry_after>0:", retryAfter > 0)
	daily := &ratelimitv1.Policy{
		Algorithm: ratelimitv1.Algorithm_ALGORITHM_FIXED_WINDOW, Limit: 1000, Period: durationpb.New(24 * time.Hour),
	}
	ctx, cancel = call()
	many, err := limiter.CheckMany(ctx, &ratelimitv1.CheckManyRequest{
		AllOrNothing: true,
		Checks: []*ratelimitv1.CheckRequest{
			{Key: "api:" + run, Policy: policy}, {Key: "api:" + run, Policy: daily},
		},
	})
	cancel()
	check(err)
	fmt.Println("ratelimit check_many:", many.GetAllowed(), len(many.GetResults()))

	// UniqueCounter: Add, then Count.
	counter := counterv1.NewUniqueCounterClient(conn)
	ctx, cancel = call()
	_, err = counter.Add(ctx, &counterv1.AddRequest{Key: "visitors:" + run, Items: []string{"ann", "bob", "ann"}})
	check(err)
	count, err := counter.Count(ctx, &counterv1.CountRequest{Keys: []string{"visitors:" + run}})
	check(err)
	cancel()
	fmt.Println("counter count:", count.GetCount())

	// Events: Subscribe, wait for `subscribed`, Publish, receive the message.
	events := eventsv1.NewEventsClient(conn)
	streamCtx, stopStream := context.WithTimeout(context.Background(), 10*time.Second)
	stream, err := events.Subscribe(streamCtx, &eventsv1.SubscribeRequest{Channels: []string{"orders:" + run}})
	check(err)
	first, err := stream.Recv()
	check(err)
	ctx, cancel = call()
	_, err = events.Publish(ctx, &eventsv1.PublishRequest{Channel: "orders:" + run, Payload: []byte("order 42")})
	cancel()
	check(err)
	message, err := stream.Recv()
	check(err)
	stopStream()
	fmt.Println("events:", first.GetSubscribed() != nil, string(message.GetEvent().GetPayload()))

	// Locker: Acquire and Release; then Hold, which a cancel releases.
	locker := lockv1.NewLockerClient(conn)
	ctx, cancel = call()
	lease, err := locker.Acquire(ctx, &lockv1.AcquireRequest{Name: "report:" + run, Ttl: durationpb.New(30 * time.Second)})
	check(err)
	released, err := locker.Release(ctx, &lockv1.ReleaseRequest{Name: "report:" + run, Token: lease.GetToken()})
	check(err)
	cancel()
	// A Hold's deadline is the longest it may keep the lock; the cancel releases it sooner.
	holdCtx, stopHold := context.WithTimeout(context.Background(), time.Minute)
	hold, err := locker.Hold(holdCtx, &lockv1.HoldRequest{Name: "report:" + run, Ttl: durationpb.New(30 * time.Second)})
	check(err)
	held, err := hold.Recv()
	check(err)
	stopHold()
	_, err = hold.Recv() // the cancelled stream ends
	if err == nil || errors.Is(err, io.EOF) {
		log.Fatal("the hold stream went on after its cancel")
	}
	freed := false
	for i := 0; i < 100 && !freed; i++ {
		ctx, cancel = call()
		state, err := locker.Inspect(ctx, &lockv1.InspectRequest{Name: "report:" + run})
		cancel()
		check(err)
		freed = !state.GetHeld()
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("locker:", lease.GetAcquired(), released.GetStatus(), held.GetAcquired() != nil, "freed:", freed)

	// Cache: Set with a tag, Get, InvalidateTags.
	cache := cachev1.NewCacheClient(conn)
	ctx, cancel = call()
	_, err = cache.Set(ctx, &cachev1.SetRequest{
		Key: "page:" + run, Value: []byte("<html>"), Ttl: durationpb.New(time.Minute), Tags: []string{"pages:" + run},
	})
	check(err)
	got, err := cache.Get(ctx, &cachev1.GetRequest{Key: "page:" + run})
	check(err)
	invalidated, err := cache.InvalidateTags(ctx, &cachev1.InvalidateTagsRequest{Tags: []string{"pages:" + run}})
	check(err)
	cancel()
	fmt.Println("cache:", string(got.GetValue()), invalidated.GetDeleted())

	// Leaderboard: Submit, Top.
	board := leaderboardv1.NewLeaderboardClient(conn)
	ctx, cancel = call()
	for member, score := range map[string]float64{"ann": 1200, "bob": 1100} {
		_, err = board.Submit(ctx, &leaderboardv1.SubmitRequest{Board: "chess:" + run, Member: member, Score: score})
		check(err)
	}
	top, err := board.Top(ctx, &leaderboardv1.TopRequest{Board: "chess:" + run, Limit: 10})
	check(err)
	cancel()
	fmt.Println("leaderboard:", top.GetEntries()[0].GetMember(), top.GetEntries()[0].GetRank(), top.GetTotal())

	// Sessions: Create, Get with touch, Destroy.
	sessions := sessionv1.NewSessionsClient(conn)
	ctx, cancel = call()
	created, err := sessions.Create(ctx, &sessionv1.CreateRequest{
		UserId: "u:" + run, Ttl: durationpb.New(30 * time.Minute), Attributes: map[string]string{"agent": "go"},
	})
	check(err)
	session, err := sessions.Get(ctx, &sessionv1.GetRequest{Id: created.GetSession().GetId(), Touch: true})
	check(err)
	destroyed, err := sessions.Destroy(ctx, &sessionv1.DestroyRequest{Id: created.GetSession().GetId()})
	check(err)
	cancel()
	fmt.Println("sessions:", session.GetSession().GetAttributes()["agent"], destroyed.GetDestroyed())

	// A bad request, read back through the error helper.
	ctx, cancel = call()
	_, err = limiter.Check(ctx, &ratelimitv1.CheckRequest{Key: "", Policy: policy})
	cancel()
	details := patterns.Details(err)
	fmt.Println("invalid:", details.Code, details.FieldViolations[0].Field, details.Reason)
}

// TLSFiles are PEM files: the CA the server's certificate chains to (none: plaintext),
// and this client's certificate and key, for a server that asks for one (mutual TLS).
type TLSFiles struct{ CA, Cert, Key string }

// connect opens a connection to target that sends apiKey (when not empty) on every call.
func connect(target, apiKey string, files TLSFiles) (*grpc.ClientConn, error) {
	transport := insecure.NewCredentials()
	if files.CA != "" {
		config := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
		pem, err := os.ReadFile(files.CA)
		if err != nil {
			return nil, err
		}
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", files.CA)
		}
		if files.Cert != "" {
			pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
			if err != nil {
				return nil, err
			}
			config.Certificates = []tls.Certificate{pair}
		}
		transport = credentials.NewTLS(config)
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if apiKey != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(apiKey)))
	}
	return grpc.NewClient(target, options...)
}

// bearer sends an API key as "authorization: Bearer <key>" on every call and stream.
type bearer string

func (key bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(key)}, nil
}

// RequireTransportSecurity is true: grpc.NewClient refuses to send the key over
// plaintext, where anyone on the path could read it and call as this team.
func (bearer) RequireTransportSecurity() bool { return true }

func newRunID() string {
	b := make([]byte, 4)
	_, err := rand.Read(b)
	check(err)
	return hex.EncodeToString(b)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
