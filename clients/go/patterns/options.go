package patterns

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// Options shared by several methods: each is a value whose type satisfies the option
// interfaces of every method it applies to (a TTL applies to Cache.Set, GetOrCompute,
// Counter.Add and Counter.Merge), so one name serves them all and a misplaced one does
// not compile.

// TTLOption is TTL's.
type TTLOption struct{ d time.Duration }

// TTL is how long what a call stores lives: a cache value (Set, GetOrCompute; default:
// the server's), a counter's key (Add, Merge; default: no expiry).
func TTL(d time.Duration) TTLOption { return TTLOption{d} }

func (o TTLOption) applySet(s *setSettings)         { s.ttl = o.d }
func (o TTLOption) applyCompute(s *computeSettings) { s.ttl = o.d }
func (o TTLOption) applyCounter(s *counterSettings) { s.ttl = o.d }

// TagsOption is Tags'.
type TagsOption struct{ tags []string }

// Tags are the tags a stored cache value carries (Set, GetOrCompute), for
// Cache.InvalidateTags.
func Tags(tags ...string) TagsOption { return TagsOption{tags} }

func (o TagsOption) applySet(s *setSettings)         { s.tags = o.tags }
func (o TagsOption) applyCompute(s *computeSettings) { s.tags = o.tags }

// WaitOption is Wait's.
type WaitOption struct{ d time.Duration }

// Wait is how long a call may wait on the server: for a lock held by someone else
// (Acquire, Hold; default: not at all), or for another caller's fill of a cache key
// (GetOrCompute; default 5 s).
func Wait(d time.Duration) WaitOption { return WaitOption{d} }

func (o WaitOption) applyLock(s *lockSettings)       { s.wait = o.d }
func (o WaitOption) applyCompute(s *computeSettings) { s.wait = o.d }

// optionalDuration is d as a message, or nil (the field left unset) for 0.
func optionalDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}
