package patterns

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/patterns-server/patterns-server/clients/go/patterns/cache/v1"
)

// The defaults of GetOrCompute, as the Python client's.
const (
	// DefaultLeaseTTL is how long a caller may hold a key's fill lease (LeaseTTL).
	DefaultLeaseTTL = 10 * time.Second
	// DefaultFillWait is how long a caller waits for another's fill (Wait).
	DefaultFillWait = 5 * time.Second
)

// Cache is the Cache service: values with expiry and tags, and cache-aside with a fill
// lease (GetOrCompute).
type Cache struct {
	c    *Client
	stub cachev1.CacheClient
}

// Entry is a key's value and how long it has left; Found is false for a miss.
type Entry struct {
	Key          string
	Found        bool
	Value        []byte
	TTLRemaining time.Duration
}

// Get is the key's value, and whether it was found.
func (r *Cache) Get(ctx context.Context, key string) (Entry, bool, error) {
	response, err := call(ctx, r.c, r.stub.Get, &cachev1.GetRequest{Key: key})
	if err != nil || !response.GetFound() {
		return Entry{Key: key}, false, err
	}
	return Entry{Key: key, Found: true, Value: response.GetValue(), TTLRemaining: response.GetTtlRemaining().AsDuration()}, true, nil
}

// GetMany is the entries of keys, in order (Found false for a miss).
func (r *Cache) GetMany(ctx context.Context, keys ...string) ([]Entry, error) {
	response, err := call(ctx, r.c, r.stub.GetMany, &cachev1.GetManyRequest{Keys: keys})
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(response.GetEntries()))
	for _, e := range response.GetEntries() {
		entries = append(entries, Entry{
			Key: e.GetKey(), Found: e.GetFound(), Value: e.GetValue(), TTLRemaining: e.GetTtlRemaining().AsDuration(),
		})
	}
	return entries, nil
}

// A SetOption changes Set: TTL, Tags, ExpireAt, OnlyIfAbsent.
type SetOption interface{ applySet(*setSettings) }

type setSettings struct {
	ttl          time.Duration
	expireAt     time.Time
	tags         []string
	onlyIfAbsent bool
}

type setOption func(*setSettings)

func (o setOption) applySet(s *setSettings) { o(s) }

// ExpireAt makes a stored value expire at t (in place of a TTL).
func ExpireAt(t time.Time) SetOption {
	return setOption(func(s *setSettings) { s.expireAt = t })
}

// OnlyIfAbsent stores a value only where the key holds none.
func OnlyIfAbsent() SetOption {
	return setOption(func(s *setSettings) { s.onlyIfAbsent = true })
}

func (s *setSettings) request(key string, value []byte, leaseToken string) *cachev1.SetRequest {
	request := &cachev1.SetRequest{
		Key: key, Value: value, Ttl: optionalDuration(s.ttl), Tags: s.tags,
		OnlyIfAbsent: s.onlyIfAbsent, LeaseToken: leaseToken,
	}
	if !s.expireAt.IsZero() {
		request.ExpireAt = timestamppb.New(s.expireAt)
	}
	return request
}

// Set stores value (for TTL, until ExpireAt, or the server's default), under Tags; whether
// it was stored (not when OnlyIfAbsent found a value).
func (r *Cache) Set(ctx context.Context, key string, value []byte, opts ...SetOption) (bool, error) {
	var s setSettings
	for _, opt := range opts {
		opt.applySet(&s)
	}
	response, err := call(ctx, r.c, r.stub.Set, s.request(key, value, ""))
	return response.GetStored(), err
}

// Delete deletes keys; how many held a value.
func (r *Cache) Delete(ctx context.Context, keys ...string) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.Delete, &cachev1.DeleteRequest{Keys: keys})
	return response.GetDeleted(), err
}

// InvalidateTags deletes every entry that carries one of tags now; how many.
func (r *Cache) InvalidateTags(ctx context.Context, tags ...string) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.InvalidateTags, &cachev1.InvalidateTagsRequest{Tags: tags})
	return response.GetDeleted(), err
}

// InvalidatePrefix deletes every entry whose key starts with prefix; how many.
func (r *Cache) InvalidatePrefix(ctx context.Context, prefix string) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.InvalidatePrefix, &cachev1.InvalidatePrefixRequest{Prefix: prefix})
	return response.GetDeleted(), err
}

// GetOrLease is the raw call under GetOrCompute: the value, the lease to fill it, or word
// that another caller's fill is under way. Its deadline is the client's plus the
// request's wait.
func (r *Cache) GetOrLease(ctx context.Context, request *cachev1.GetOrLeaseRequest) (*cachev1.GetOrLeaseResponse, error) {
	return unary(ctx, r.c, r.stub.GetOrLease, request, request.GetWaitTimeout().AsDuration(), 0)
}

// ReleaseLease gives back a fill lease without a value; whether the token still held it.
func (r *Cache) ReleaseLease(ctx context.Context, key, leaseToken string) (bool, error) {
	response, err := call(ctx, r.c, r.stub.ReleaseLease, &cachev1.ReleaseLeaseRequest{Key: key, LeaseToken: leaseToken})
	return response.GetReleased(), err
}

// A ComputeOption changes GetOrCompute: TTL, Tags, LeaseTTL, Wait, FallbackAfter.
type ComputeOption interface{ applyCompute(*computeSettings) }

type computeSettings struct {
	ttl           time.Duration
	tags          []string
	leaseTTL      time.Duration
	wait          time.Duration
	fallbackAfter time.Duration
}

type computeOption func(*computeSettings)

func (o computeOption) applyCompute(s *computeSettings) { o(s) }

// LeaseTTL is how long GetOrCompute may hold a key's fill lease (DefaultLeaseTTL, 10 s):
// if the holder dies, a waiter gets the next lease after that.
func LeaseTTL(d time.Duration) ComputeOption {
	return computeOption(func(s *computeSettings) { s.leaseTTL = d })
}

// budget is the time a recipe may spend on the server's calls before it falls back: spent
// only while a call is in progress, not while the caller's own compute runs.
type budget struct{ left time.Duration }

// spend makes a call within what is left of the budget, and counts what it took.
func spend[Req, Resp any](
	ctx context.Context, b *budget, c *Client, method func(context.Context, Req, ...grpc.CallOption) (Resp, error), request Req,
) (Resp, error) {
	started := time.Now()
	// A spent budget still makes the call, with a deadline that has passed: it fails at
	// once with DEADLINE_EXCEEDED, which falls back.
	response, err := unary(ctx, c, method, request, 0, max(b.left, time.Nanosecond))
	b.left -= time.Since(started)
	return response, err
}

// GetOrCompute is the value of key; on a miss, compute's, stored for TTL under Tags.
//
// Across the fleet one caller computes a cold key (it holds the key's fill lease for
// LeaseTTL at most) while the others wait up to Wait (5 s) for its value, then compute it
// themselves, without storing. If compute fails, the lease is given back (the next caller
// computes at once) and compute's error returned as it is; a panic gives it back too.
//
// The cache costs FallbackAfter (200 ms) at most, all its calls together, plus Wait when
// the server said another caller is filling the key: when it cannot answer within that
// (the server or its Redis unavailable, paused or overloaded, or no connection: see
// FallsBack), compute's value is returned directly. So this never takes longer than
// FallbackAfter (+ Wait) plus compute itself. Other errors of the cache are returned.
func (r *Cache) GetOrCompute(ctx context.Context, key string, compute func(ctx context.Context) ([]byte, error), opts ...ComputeOption) ([]byte, error) {
	s := computeSettings{leaseTTL: DefaultLeaseTTL, wait: DefaultFillWait, fallbackAfter: DefaultFallbackAfter}
	for _, opt := range opts {
		opt.applyCompute(&s)
	}
	b := &budget{left: positive(s.fallbackAfter, DefaultFallbackAfter)}
	lease := &cachev1.GetOrLeaseRequest{Key: key, LeaseTtl: durationpb.New(s.leaseTTL)}
	// No wait in the first call: a paused server costs the budget only.
	response, err := spend(ctx, b, r.c, r.stub.GetOrLease, lease)
	if err == nil && response.GetPending() != nil && s.wait > 0 {
		b.left += s.wait // the server said a fill is under way: worth waiting for
		lease.WaitTimeout = durationpb.New(s.wait)
		response, err = spend(ctx, b, r.c, r.stub.GetOrLease, lease)
	}
	if err != nil {
		if !FallsBack(err) {
			return nil, err
		}
		r.c.logger.Warn("patterns: cache unavailable, computing directly", "key", key, "error", err)
		return compute(ctx)
	}
	if hit := response.GetHit(); hit != nil {
		return hit.GetValue(), nil
	}
	if response.GetLease() == nil { // still pending: another caller fills; ours is not stored
		return compute(ctx)
	}
	token := response.GetLease().GetToken()
	value, err := r.computeHolding(ctx, b, key, token, compute)
	if err != nil {
		r.giveBack(ctx, b, key, token)
		return nil, err
	}
	store := setSettings{ttl: s.ttl, tags: s.tags}
	if _, err := spend(ctx, b, r.c, r.stub.Set, store.request(key, value, token)); err != nil {
		if !FallsBack(err) {
			r.giveBack(ctx, b, key, token)
			return nil, err
		}
		r.c.logger.Warn("patterns: cache unavailable, value not stored", "key", key, "error", err)
	}
	return value, nil
}

// computeHolding is compute's answer, computed while holding the fill lease token of key:
// a compute that panics gives the lease back before the panic goes on.
func (r *Cache) computeHolding(ctx context.Context, b *budget, key, token string, compute func(context.Context) ([]byte, error)) ([]byte, error) {
	defer func() {
		if p := recover(); p != nil {
			r.giveBack(ctx, b, key, token)
			panic(p)
		}
	}()
	return compute(ctx)
}

// giveBack releases the fill lease token of key, so that a waiter takes the next one at
// once; if the cache cannot, the lease ends after its lease ttl. It runs even when ctx is
// done (a cancelled compute is the usual reason to give a lease back).
func (r *Cache) giveBack(ctx context.Context, b *budget, key, token string) {
	request := &cachev1.ReleaseLeaseRequest{Key: key, LeaseToken: token}
	if _, err := spend(context.WithoutCancel(ctx), b, r.c, r.stub.ReleaseLease, request); err != nil {
		r.c.logger.Warn("patterns: fill lease not given back (it ends after its lease ttl)", "key", key, "error", err)
	}
}
