package patterns

import (
	"context"
	"time"

	counterv1 "github.com/patterns-server/patterns-server/clients/go/patterns/counter/v1"
)

// Counter is the UniqueCounter service: approximate distinct counts (HyperLogLog, 0.81%
// standard error).
type Counter struct {
	c    *Client
	stub counterv1.UniqueCounterClient
}

// A CounterOption changes Add or Merge: TTL.
type CounterOption interface{ applyCounter(*counterSettings) }

type counterSettings struct{ ttl time.Duration }

// Add records items under key (with TTL, the key then expires that long after this
// call); whether the estimate moved.
func (r *Counter) Add(ctx context.Context, key string, items []string, opts ...CounterOption) (bool, error) {
	var s counterSettings
	for _, opt := range opts {
		opt.applyCounter(&s)
	}
	request := &counterv1.AddRequest{Key: key, Items: items, Ttl: optionalDuration(s.ttl)}
	response, err := call(ctx, r.c, r.stub.Add, request)
	return response.GetChanged(), err
}

// Count is the estimated number of distinct items in the union of keys.
func (r *Counter) Count(ctx context.Context, keys ...string) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.Count, &counterv1.CountRequest{Keys: keys})
	return response.GetCount(), err
}

// Merge stores the union of sources into destination (with TTL, expiring that long
// after); its count after.
func (r *Counter) Merge(ctx context.Context, destination string, sources []string, opts ...CounterOption) (uint64, error) {
	var s counterSettings
	for _, opt := range opts {
		opt.applyCounter(&s)
	}
	request := &counterv1.MergeRequest{Destination: destination, Sources: sources, Ttl: optionalDuration(s.ttl)}
	response, err := call(ctx, r.c, r.stub.Merge, request)
	return response.GetCount(), err
}
