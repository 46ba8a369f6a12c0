package patterns_test

// Tests against a live patterns-server: PATTERNS_TARGET names it (plaintext, or with the
// other PATTERNS_* variables). They fail, not skip, without it: a run that tested nothing
// must not pass.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
)

func live(t *testing.T, opts ...patterns.Option) *patterns.Client {
	t.Helper()
	if os.Getenv("PATTERNS_TARGET") == "" {
		t.Fatal("PATTERNS_TARGET is unset: these tests need a patterns-server (host:port)")
	}
	client, err := patterns.FromEnv(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// fresh is a name no other run uses.
func fresh(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + ":" + hex.EncodeToString(b)
}

// eventually polls condition until it holds, failing after a generous deadline.
func eventually(t *testing.T, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(value T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return value
	}
}

func TestRateLimiting(t *testing.T) {
	ctx, limiter := context.Background(), live(t).RateLimiter()
	key, policy := fresh("user"), patterns.GCRA(3, time.Minute)
	var allowed []bool
	var last patterns.Decision
	for range 4 {
		last = must[patterns.Decision](t)(limiter.Check(ctx, key, policy))
		allowed = append(allowed, last.Allowed)
	}
	if !allowed[0] || !allowed[1] || !allowed[2] || allowed[3] || last.RetryAfter <= 0 || last.Fallback {
		t.Errorf("allowed %v, last %+v", allowed, last)
	}
	if last.Limit != 3 || last.Policy != policy {
		t.Errorf("the refusal's limit %d, policy %+v", last.Limit, last.Policy)
	}
	peek := must[patterns.Decision](t)(limiter.Check(ctx, fresh("peek"), policy, patterns.Peek(), patterns.Cost(3)))
	if !peek.Allowed || peek.Remaining != 3 {
		t.Errorf("a peek consumed: %+v", peek)
	}
	// A healthy server answers a fail-open check itself.
	open := must[patterns.Decision](t)(limiter.Check(ctx, key, policy, patterns.FailOpen()))
	if open.Allowed || open.Fallback {
		t.Errorf("a fail-open check of a spent key: %+v", open)
	}
	if err := limiter.Reset(ctx, key, policy); err != nil {
		t.Fatal(err)
	}
	all, decisions, err := limiter.CheckMany(ctx, []patterns.KeyPolicy{
		{Key: key, Policy: policy}, {Key: key, Policy: patterns.FixedWindow(1000, 24*time.Hour)},
	}, true)
	if err != nil || !all || len(decisions) != 2 || !decisions[0].Allowed {
		t.Errorf("CheckMany after Reset: %v %+v %v", all, decisions, err)
	}
}

func TestARefusedArgumentIsAnError(t *testing.T) {
	_, err := live(t).RateLimiter().Check(context.Background(), "", patterns.GCRA(3, time.Minute))
	var e *patterns.Error
	if !errors.As(err, &e) {
		t.Fatalf("not an *Error: %v", err)
	}
	if e.CodeName() != "INVALID_ARGUMENT" || e.Reason != "INVALID_ARGUMENT" ||
		len(e.FieldViolations) == 0 || e.FieldViolations[0].Field != "key" {
		t.Errorf("%+v", e)
	}
	if patterns.FallsBack(err) {
		t.Error("a refused argument falls back")
	}
	// A fail-open check does not hide it either.
	_, err = live(t).RateLimiter().Check(context.Background(), "", patterns.GCRA(3, time.Minute), patterns.FailOpen())
	if !errors.As(err, &e) || e.CodeName() != "INVALID_ARGUMENT" {
		t.Errorf("fail-open hid %v", err)
	}
}

func TestCounterLeaderboardAndSessions(t *testing.T) {
	ctx, client := context.Background(), live(t)
	key := fresh("visitors")
	if !must[bool](t)(client.Counter().Add(ctx, key, []string{"a", "b", "a"}, patterns.TTL(time.Minute))) {
		t.Error("Add of new items changed nothing")
	}
	if n := must[uint64](t)(client.Counter().Count(ctx, key)); n != 2 {
		t.Errorf("count %d", n)
	}
	other := fresh("visitors")
	must[bool](t)(client.Counter().Add(ctx, other, []string{"c"}))
	if n := must[uint64](t)(client.Counter().Merge(ctx, fresh("all"), []string{key, other})); n != 3 {
		t.Errorf("merged count %d", n)
	}

	board := client.Leaderboard().Board(fresh("chess"))
	must[patterns.Submitted](t)(board.Submit(ctx, "ann", 10))
	must[patterns.Submitted](t)(board.Submit(ctx, "bob", 5))
	bumped := must[patterns.Submitted](t)(board.Increment(ctx, "bob", 10))
	if bumped.Score != 15 || bumped.Rank != 1 {
		t.Errorf("after Increment: %+v", bumped)
	}
	if kept := must[patterns.Submitted](t)(board.SubmitBest(ctx, "ann", 1)); kept.Updated || kept.Score != 10 {
		t.Errorf("SubmitBest of a worse score: %+v", kept)
	}
	top := must[patterns.Page](t)(board.Top(ctx, 10, 0))
	if top.Total != 2 || top.Standings[0].Member != "bob" || top.Standings[1].Rank != 2 {
		t.Errorf("top %+v", top)
	}
	if standing, ok, err := board.Rank(ctx, "ann"); err != nil || !ok || standing.Rank != 2 {
		t.Errorf("Rank: %+v %v %v", standing, ok, err)
	}
	if _, ok, err := board.Rank(ctx, "nobody"); err != nil || ok {
		t.Errorf("Rank of an absent member: %v %v", ok, err)
	}
	if around := must[[]patterns.Standing](t)(board.Around(ctx, "ann", 1)); len(around) != 2 {
		t.Errorf("around %+v", around)
	}
	if n := must[uint64](t)(board.Remove(ctx, "ann", "nobody")); n != 1 {
		t.Errorf("removed %d", n)
	}
	if n := must[uint64](t)(board.Size(ctx)); n != 1 {
		t.Errorf("size %d", n)
	}

	sessions, user := client.Sessions(), fresh("u")
	s := must[patterns.Session](t)(sessions.Create(ctx, patterns.NewSession{
		UserID: user, TTL: time.Minute, Attributes: map[string]string{"agent": "go"},
	}))
	got, found, err := sessions.Touch(ctx, s.ID)
	if err != nil || !found || got.Attributes["agent"] != "go" || got.UserID != user {
		t.Errorf("Touch: %+v %v %v", got, found, err)
	}
	updated := must[patterns.Session](t)(sessions.Update(ctx, s.ID, map[string]string{"theme": "dark"}, []string{"agent"}))
	if updated.Attributes["theme"] != "dark" || updated.Attributes["agent"] != "" {
		t.Errorf("after Update: %v", updated.Attributes)
	}
	rotated := must[patterns.Session](t)(sessions.Rotate(ctx, s.ID))
	if _, found, _ := sessions.Get(ctx, s.ID); found || rotated.ID == s.ID {
		t.Error("the old id lives on after Rotate")
	}
	must[patterns.Session](t)(sessions.Create(ctx, patterns.NewSession{UserID: user, TTL: time.Minute}))
	if list := must[patterns.SessionList](t)(sessions.List(ctx, user, 0, "")); list.Total != 2 {
		t.Errorf("list %+v", list)
	}
	if n := must[uint64](t)(sessions.DestroyAll(ctx, user, rotated.ID)); n != 1 {
		t.Errorf("DestroyAll ended %d", n)
	}
	if !must[bool](t)(sessions.Destroy(ctx, rotated.ID)) {
		t.Error("Destroy found no session")
	}
	if _, found, err := sessions.Get(ctx, rotated.ID); found || err != nil {
		t.Errorf("Get after Destroy: %v %v", found, err)
	}
}

func TestCache(t *testing.T) {
	ctx, cache := context.Background(), live(t).Cache()
	key, tag := fresh("page"), fresh("tag")
	if !must[bool](t)(cache.Set(ctx, key, []byte("<html>"), patterns.TTL(time.Minute), patterns.Tags(tag))) {
		t.Error("Set stored nothing")
	}
	if must[bool](t)(cache.Set(ctx, key, []byte("other"), patterns.OnlyIfAbsent())) {
		t.Error("OnlyIfAbsent overwrote a value")
	}
	entry, found, err := cache.Get(ctx, key)
	if err != nil || !found || string(entry.Value) != "<html>" || entry.TTLRemaining <= 0 {
		t.Errorf("Get: %+v %v %v", entry, found, err)
	}
	entries := must[[]patterns.Entry](t)(cache.GetMany(ctx, key, fresh("absent")))
	if len(entries) != 2 || !entries[0].Found || entries[1].Found {
		t.Errorf("GetMany: %+v", entries)
	}
	if n := must[uint64](t)(cache.InvalidateTags(ctx, tag)); n != 1 {
		t.Errorf("InvalidateTags deleted %d", n)
	}
	prefix := fresh("prefix")
	must[bool](t)(cache.Set(ctx, prefix+":a", []byte("a"), patterns.ExpireAt(time.Now().Add(time.Minute))))
	if n := must[uint64](t)(cache.InvalidatePrefix(ctx, prefix+":")); n != 1 {
		t.Errorf("InvalidatePrefix deleted %d", n)
	}
	must[bool](t)(cache.Set(ctx, key, []byte("x")))
	if n := must[uint64](t)(cache.Delete(ctx, key, fresh("absent"))); n != 1 {
		t.Errorf("Delete deleted %d", n)
	}
}

func TestGetOrComputeComputesOnceAndGivesTheLeaseBackOnFailure(t *testing.T) {
	ctx, cache := context.Background(), live(t).Cache()
	key := fresh("report")
	// Seconds, not 200 ms: on a busy machine a slow answer would fall back to computing,
	// which is not what this test is about (fallback_test.go's are).
	patient := patterns.FallbackAfter(5 * time.Second)
	var mu sync.Mutex
	computed := 0
	compute := func(context.Context) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		computed++
		return []byte("v1"), nil
	}
	for range 2 {
		if value := must[[]byte](t)(cache.GetOrCompute(ctx, key, compute, patterns.TTL(time.Minute), patient)); string(value) != "v1" {
			t.Errorf("value %q", value)
		}
	}
	if computed != 1 {
		t.Errorf("computed %d times", computed)
	}

	// Callers at once: one computes, the others wait for its value.
	crowd, computed := fresh("crowd"), 0
	slow := func(ctx context.Context) ([]byte, error) {
		time.Sleep(200 * time.Millisecond)
		return compute(ctx)
	}
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if value, err := cache.GetOrCompute(ctx, crowd, slow, patient); err != nil || string(value) != "v1" {
				t.Errorf("a caller of the crowd: %q %v", value, err)
			}
		})
	}
	wg.Wait()
	if computed != 1 {
		t.Errorf("the crowd computed %d times", computed)
	}

	// A failed compute: its own error back, and the lease given back, so the next caller
	// computes at once rather than waiting out the lease (10 s).
	failing, broken := fresh("failing"), errors.New("the source is down")
	_, err := cache.GetOrCompute(ctx, failing, func(context.Context) ([]byte, error) { return nil, broken }, patient)
	if err != broken {
		t.Fatalf("the compute's error came back as %v", err)
	}
	started := time.Now()
	value, err := cache.GetOrCompute(ctx, failing, compute, patterns.Wait(20*time.Second), patient)
	if err != nil || string(value) != "v1" {
		t.Fatalf("after a failed compute: %q %v", value, err)
	}
	if took := time.Since(started); took > 5*time.Second {
		t.Errorf("the next caller waited %v: the lease was not given back", took)
	}

	// A compute that panics gives the lease back too, and the panic goes on.
	panicking := fresh("panicking")
	func() {
		defer func() {
			if p := recover(); p != "the source broke" {
				t.Errorf("recovered %v", p)
			}
		}()
		cache.GetOrCompute(ctx, panicking, func(context.Context) ([]byte, error) { panic("the source broke") }, patient)
	}()
	started = time.Now()
	if _, err := cache.GetOrCompute(ctx, panicking, compute, patterns.Wait(20*time.Second), patient); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(started); took > 5*time.Second {
		t.Errorf("the next caller waited %v: the lease was not given back after a panic", took)
	}
}

func TestAHeldLockIsFencedAndFreedAtTheEnd(t *testing.T) {
	ctx, locks := context.Background(), live(t).Locks()
	name := fresh("report")
	held, err := locks.Hold(ctx, name, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if held.FencingToken == 0 || held.Token == "" {
		t.Errorf("held %+v", held)
	}
	// Someone else cannot have it meanwhile.
	if _, err := locks.Hold(ctx, name, time.Second, patterns.Wait(100*time.Millisecond)); !errors.Is(err, patterns.ErrNotAcquired) {
		t.Errorf("a second Hold: %v", err)
	}
	if _, ok, err := locks.Acquire(ctx, name, time.Second); ok || err != nil {
		t.Errorf("Acquire of a held lock: %v %v", ok, err)
	}
	held.Release()
	held.Release() // again: harmless
	if state := must[patterns.LockState](t)(locks.Inspect(ctx, name)); state.Held {
		t.Error("the lock is held after Release returned")
	}
	select {
	case <-held.Lost():
		t.Errorf("a released lock reads as lost: %v", held.Err())
	default:
	}
	if held.Context().Err() == nil {
		t.Error("the hold's context lives on after Release")
	}

	// Do: the same, as a block.
	var token uint64
	err = locks.Do(ctx, name, 3*time.Second, func(ctx context.Context, held *patterns.Held) error {
		token = held.FencingToken
		return ctx.Err()
	})
	if err != nil || token == 0 {
		t.Errorf("Do: token %d, error %v", token, err)
	}
	if state := must[patterns.LockState](t)(locks.Inspect(ctx, name)); state.Held {
		t.Errorf("after Do: %+v", state)
	}
	failure := errors.New("the work failed")
	if err := locks.Do(ctx, name, time.Second, func(context.Context, *patterns.Held) error { return failure }); err != failure {
		t.Errorf("Do returned %v, not the block's error", err)
	}
}

func TestALostLockIsReported(t *testing.T) {
	ctx, locks := context.Background(), live(t).Locks()
	name := fresh("job")
	held, err := locks.Hold(ctx, name, 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if !must[bool](t)(locks.ForceRelease(ctx, name)) {
		t.Fatal("ForceRelease found no lease")
	}
	select {
	case <-held.Lost():
	case <-time.After(15 * time.Second):
		t.Fatal("the loss was not reported within 15s")
	}
	var e *patterns.Error
	if !errors.As(held.Err(), &e) || e.CodeName() != "ABORTED" || e.Reason != "LEASE_LOST" {
		t.Errorf("the loss reads %v", held.Err())
	}
	if held.Context().Err() == nil {
		t.Error("the hold's context lives on after the loss")
	}
}

func TestAHoldEndsWithItsContext(t *testing.T) {
	locks := live(t).Locks()
	name := fresh("ctx")
	ctx, cancel := context.WithCancel(context.Background())
	held, err := locks.Hold(ctx, name, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	cancel()
	eventually(t, "the lock freed after its context ended", func() bool {
		state, err := locks.Inspect(context.Background(), name)
		return err == nil && !state.Held
	})
	select {
	case <-held.Lost():
		t.Error("a hold whose context ended reads as lost")
	default:
	}
}

func TestLeases(t *testing.T) {
	ctx, locks := context.Background(), live(t).Locks()
	name := fresh("lease")
	lease, ok, err := locks.Acquire(ctx, name, time.Minute)
	if err != nil || !ok || lease.FencingToken == 0 {
		t.Fatalf("Acquire: %+v %v %v", lease, ok, err)
	}
	extended, ok, err := locks.Extend(ctx, lease, 2*time.Minute)
	if err != nil || !ok || !extended.ExpiresAt.After(lease.ExpiresAt) {
		t.Errorf("Extend: %+v %v %v", extended, ok, err)
	}
	// A second caller waits for the release.
	go func() {
		time.Sleep(200 * time.Millisecond)
		locks.Release(context.Background(), lease)
	}()
	next, ok, err := locks.Acquire(ctx, name, time.Minute, patterns.Wait(10*time.Second))
	if err != nil || !ok || next.FencingToken <= lease.FencingToken {
		t.Errorf("Acquire with a wait: %+v %v %v", next, ok, err)
	}
	if status := must[patterns.ReleaseStatus](t)(locks.Release(ctx, lease)); status != patterns.HeldByOther {
		t.Errorf("releasing a stale lease: %v", status)
	}
	if status := must[patterns.ReleaseStatus](t)(locks.Release(ctx, next)); status != patterns.Released {
		t.Errorf("Release: %v", status)
	}
}

func TestASubscriptionDeliversEveryEventInOrder(t *testing.T) {
	ctx, events := context.Background(), live(t).Events()
	channel := fresh("orders")
	subscription := events.Subscribe(ctx, channel)
	defer subscription.Close()
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := subscription.WaitSubscribed(wait); err != nil {
		t.Fatal(err)
	}
	// Published before anything is read: they come in batches, and out one by one.
	payloads := []string{"1", "2", "3", "4", "5"}
	for _, p := range payloads {
		if n := must[uint64](t)(events.Publish(ctx, channel, []byte(p))); n == 0 {
			t.Errorf("nobody received %s", p)
		}
	}
	for _, want := range payloads {
		item, err := subscription.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		event, ok := item.(patterns.Event)
		if !ok || string(event.Payload) != want || event.Channel != channel || event.ReceivedAt.IsZero() {
			t.Fatalf("item %#v, wanted event %s", item, want)
		}
	}
	// A pattern subscription, read from the channel.
	prefix := fresh("shop")
	byPattern := events.PSubscribe(ctx, prefix+".*")
	defer byPattern.Close()
	if err := byPattern.WaitSubscribed(wait); err != nil {
		t.Fatal(err)
	}
	must[uint64](t)(events.Publish(ctx, prefix+".eu", []byte("x")))
	select {
	case item := <-byPattern.Items():
		if event, ok := item.(patterns.Event); !ok || event.Pattern != prefix+".*" || event.Channel != prefix+".eu" {
			t.Errorf("item %#v", item)
		}
	case <-wait.Done():
		t.Fatal("no event by pattern")
	}
}

func TestASubscriptionEndsOnAFailureRetryingCannotCure(t *testing.T) {
	subscription := live(t).Events().Subscribe(context.Background(), "")
	defer subscription.Close()
	wait, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := subscription.WaitSubscribed(wait)
	var e *patterns.Error
	if !errors.As(err, &e) || e.CodeName() != "INVALID_ARGUMENT" {
		t.Fatalf("WaitSubscribed: %v", err)
	}
	if _, err := subscription.Next(wait); !errors.As(err, &e) || subscription.Err() != err {
		t.Errorf("Next: %v, Err: %v", err, subscription.Err())
	}
}

// cuttable is a TCP proxy to target whose connections can be cut, as a restarting server
// or a broken network would, or stalled (nothing forwarded until resumed), as a paused
// server or network would.
type cuttable struct {
	target    string
	listener  net.Listener
	mu        sync.Mutex
	conns     []net.Conn
	stalled   sync.RWMutex // held (Lock) while stalled; each forwarded write passes it
	isStalled bool         // under mu
}

func newCuttable(t *testing.T, target string) *cuttable {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttable{target: target, listener: listener}
	go p.serve()
	t.Cleanup(func() { p.resume(); listener.Close(); p.cut() })
	return p
}

func (p *cuttable) serve() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe forwards what src sends to dst, waiting while the proxy is stalled.
func (p *cuttable) pipe(dst, src net.Conn) {
	defer dst.Close()
	buffer := make([]byte, 32*1024)
	for {
		n, err := src.Read(buffer)
		if n > 0 {
			p.stalled.RLock()
			p.stalled.RUnlock()
			if _, err := dst.Write(buffer[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall stops forwarding in both directions until resume (at the latest when the test ends).
func (p *cuttable) stall() {
	p.stalled.Lock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isStalled = true
}

func (p *cuttable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isStalled {
		p.isStalled = false
		p.stalled.Unlock()
	}
}

func (p *cuttable) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, conn := range p.conns {
		conn.Close()
	}
	p.conns = nil
}

func TestASubscriptionResubscribesAfterAnInterruptionAndReportsTheGap(t *testing.T) {
	live(t) // fails without PATTERNS_TARGET
	proxy := newCuttable(t, os.Getenv("PATTERNS_TARGET"))
	ctx := context.Background()
	client := clientOf(t, proxy.listener.Addr().String())
	publisher := live(t).Events()
	channel := fresh("orders")
	subscription := client.Events().Subscribe(ctx, channel)
	defer subscription.Close()
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := subscription.WaitSubscribed(wait); err != nil {
		t.Fatal(err)
	}
	proxy.cut()
	item, err := subscription.Next(wait)
	if err != nil {
		t.Fatal(err)
	}
	gap, ok := item.(patterns.Gap)
	var e *patterns.Error
	if !ok || !errors.As(gap.Err, &e) || e.CodeName() != "UNAVAILABLE" {
		t.Fatalf("the first item after the cut: %#v", item)
	}
	if err := subscription.WaitSubscribed(wait); err != nil {
		t.Fatal(err)
	}
	must[uint64](t)(publisher.Publish(ctx, channel, []byte("after")))
	item, err = subscription.Next(wait)
	if event, ok := item.(patterns.Event); err != nil || !ok || string(event.Payload) != "after" {
		t.Fatalf("after the gap: %#v %v", item, err)
	}
}

func TestAClientOverAGivenConnection(t *testing.T) {
	owner := live(t)
	reused, err := patterns.NewClient("", patterns.WithConn(owner.Conn()), patterns.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	reused.Close() // leaves the connection open
	if _, err := owner.Counter().Count(context.Background(), fresh("k")); err != nil {
		t.Errorf("the owner's connection after the reusing client closed: %v", err)
	}
	if _, err := reused.Counter().Count(context.Background(), fresh("k")); err != nil {
		t.Errorf("the reusing client: %v", err)
	}
	// A key over a plaintext connection given by WithConn: gRPC refuses to send it.
	keyed, err := patterns.NewClient("", patterns.WithConn(owner.Conn()), patterns.WithAPIKey("a-key"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = keyed.Counter().Count(context.Background(), fresh("k"))
	var e *patterns.Error
	if os.Getenv("PATTERNS_CA_FILE") == "" && (!errors.As(err, &e) || e.CodeName() != "UNAUTHENTICATED") {
		t.Errorf("a key over plaintext: %v", err)
	}
}

func TestHoldsSubscriptionsAndConsumersLeaveNoGoroutineBehind(t *testing.T) {
	ctx, client := context.Background(), live(t)
	if _, err := client.Counter().Count(ctx, fresh("warm")); err != nil { // the connection up
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for range 20 {
		held, err := client.Locks().Hold(ctx, fresh("leak"), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held.Release()
		subscription := client.Events().Subscribe(ctx, fresh("leak"))
		if err := subscription.WaitSubscribed(ctx); err != nil {
			t.Fatal(err)
		}
		subscription.Close()
		consumer := client.Streams().Consume(ctx, patterns.ConsumeOptions{Stream: fresh("leak"), Group: "g", Consumer: "a"})
		if err := consumer.WaitSubscribed(ctx); err != nil {
			t.Fatal(err)
		}
		consumer.Close()
	}
	// A few of gRPC's own may still be finishing: a margin, and time.
	eventually(t, "the goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= before+2
	})
}
