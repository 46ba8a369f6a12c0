package patterns_test

// The recipes' fallbacks, against servers that cannot answer: a port where nothing
// listens, and one that accepts connections and then says nothing (as a paused server
// does). Real sockets; no server of patterns-server needed.

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
)

// A fallback must come within its budget plus room for a busy machine.
const fallbackBound = 2 * time.Second

// silentServer accepts connections and never answers; it closes them when the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var accepted []net.Conn
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		listener.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range accepted {
			conn.Close()
		}
	})
	return listener.Addr().String()
}

// nobodyListens is an address where connections are refused.
func nobodyListens(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close()
	return address
}

func clientOf(t *testing.T, target string, opts ...patterns.Option) *patterns.Client {
	t.Helper()
	client, err := patterns.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// checkModes are the two ways a client sends its checks: over its stream (the default),
// or a unary Check each.
var checkModes = map[string]bool{"stream": true, "unary": false}

func TestAFailOpenCheckAdmitsWithinItsBudget(t *testing.T) {
	targets := map[string]string{"silent": silentServer(t), "refused": nobodyListens(t)}
	for name, target := range targets {
		for mode, stream := range checkModes {
			t.Run(name+"/"+mode, func(t *testing.T) {
				failOpenWithinBudget(t, clientOf(t, target, patterns.WithStreamChecks(stream)).RateLimiter())
			})
		}
	}
}

func failOpenWithinBudget(t *testing.T, limiter *patterns.RateLimiter) {
	policy := patterns.TokenBucket(10, time.Minute, 40)
	started := time.Now()
	d, err := limiter.Check(context.Background(), "k", policy, patterns.FailOpen(), patterns.Cost(3))
	took := time.Since(started)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allowed || !d.Fallback || d.Limit != 40 || d.Remaining != 37 {
		t.Errorf("decision %+v", d)
	}
	if took > fallbackBound {
		t.Errorf("the fallback took %v", took)
	}
	closed, err := limiter.Check(context.Background(), "k", policy, patterns.FailClosed(),
		patterns.FallbackAfter(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if closed.Allowed || !closed.Fallback || closed.RetryAfter <= 0 {
		t.Errorf("fail-closed decision %+v", closed)
	}
}

func TestACheckWithoutAFallbackFailsAfterTheClientsTimeout(t *testing.T) {
	for mode, stream := range checkModes {
		t.Run(mode, func(t *testing.T) {
			limiter := clientOf(t, silentServer(t), patterns.WithTimeout(300*time.Millisecond), patterns.WithStreamChecks(stream))
			failsAfterTheTimeout(t, limiter.RateLimiter())
		})
	}
}

func failsAfterTheTimeout(t *testing.T, limiter *patterns.RateLimiter) {
	started := time.Now()
	_, err := limiter.Check(context.Background(), "k", patterns.GCRA(1, time.Second))
	var e *patterns.Error
	if !errors.As(err, &e) || e.CodeName() != "DEADLINE_EXCEEDED" {
		t.Fatalf("error %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("errors.Is(err, context.DeadlineExceeded) is false")
	}
	if took := time.Since(started); took < 250*time.Millisecond || took > fallbackBound {
		t.Errorf("the call took %v with a 300ms timeout", took)
	}
}

func TestGetOrComputeComputesWhenTheCacheCannotAnswer(t *testing.T) {
	for name, target := range map[string]string{"silent": silentServer(t), "refused": nobodyListens(t)} {
		t.Run(name, func(t *testing.T) {
			cache := clientOf(t, target).Cache()
			started := time.Now()
			value, err := cache.GetOrCompute(context.Background(), "k", func(context.Context) ([]byte, error) {
				return []byte("from the source"), nil
			})
			if err != nil || string(value) != "from the source" {
				t.Fatalf("value %q, error %v", value, err)
			}
			if took := time.Since(started); took > fallbackBound {
				t.Errorf("the fallback took %v", took)
			}
		})
	}
}

func TestAHoldGivesUpWhenTheServerSaysNothing(t *testing.T) {
	locks := clientOf(t, silentServer(t), patterns.WithTimeout(300*time.Millisecond)).Locks()
	started := time.Now()
	_, err := locks.Hold(context.Background(), "l", time.Second)
	var e *patterns.Error
	if !errors.As(err, &e) || e.CodeName() != "DEADLINE_EXCEEDED" {
		t.Fatalf("error %v", err)
	}
	if took := time.Since(started); took > fallbackBound {
		t.Errorf("giving up took %v", took)
	}
}

func TestASubscriptionKeepsTryingAnAbsentServer(t *testing.T) {
	subscription := clientOf(t, nobodyListens(t)).Events().Subscribe(context.Background(), "c")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := subscription.WaitSubscribed(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for an absent server: %v", err)
	}
	if err := subscription.Err(); err != nil {
		t.Errorf("the subscription gave up: %v", err)
	}
	subscription.Close()
	if _, err := subscription.Next(context.Background()); !errors.Is(err, patterns.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	if _, open := <-subscription.Items(); open {
		t.Error("Items is open after Close")
	}
}
