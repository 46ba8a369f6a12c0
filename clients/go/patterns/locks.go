package patterns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	lockv1 "github.com/patterns-server/patterns-server/clients/go/patterns/lock/v1"
)

// ErrNotAcquired is Hold's error when the lock stayed held by someone else for all of the
// Wait (none by default).
var ErrNotAcquired = errors.New("patterns: lock not acquired within the wait")

// Locks is the Locker service: leases with fencing tokens, and locks held for a piece of
// work (Hold, Do).
type Locks struct {
	c    *Client
	stub lockv1.LockerClient
}

// Lease is a granted lease: Token proves it (keep it secret), FencingToken is greater than
// every earlier grant's of the name (pass it to what the lock protects, which refuses a
// lower one than it has seen), ExpiresAt is its end unless extended or released.
type Lease struct {
	Name         string
	Token        string
	FencingToken uint64
	ExpiresAt    time.Time
}

// LockState is what Inspect says of a lock (never its token).
type LockState struct {
	Held         bool
	FencingToken uint64
	TTLRemaining time.Duration
}

// ReleaseStatus is what a release found: released, nobody holding the lock, or someone else.
type ReleaseStatus = lockv1.ReleaseStatus

// The release statuses.
const (
	Released    = lockv1.ReleaseStatus_RELEASE_STATUS_RELEASED
	NotHeld     = lockv1.ReleaseStatus_RELEASE_STATUS_NOT_HELD
	HeldByOther = lockv1.ReleaseStatus_RELEASE_STATUS_HELD_BY_OTHER
)

// A LockOption changes Acquire, Hold or Do: Wait.
type LockOption interface{ applyLock(*lockSettings) }

type lockSettings struct{ wait time.Duration }

func lockOptions(opts []LockOption) lockSettings {
	var s lockSettings
	for _, opt := range opts {
		opt.applyLock(&s)
	}
	return s
}

// Acquire takes the lock name for ttl, waiting up to Wait for it (not at all by
// default); ok is false when it was not granted (an answer, not an error). The call's
// deadline is the client's plus the wait.
func (r *Locks) Acquire(ctx context.Context, name string, ttl time.Duration, opts ...LockOption) (lease Lease, ok bool, err error) {
	s := lockOptions(opts)
	request := &lockv1.AcquireRequest{Name: name, Ttl: durationpb.New(ttl), WaitTimeout: optionalDuration(s.wait)}
	response, err := unary(ctx, r.c, r.stub.Acquire, request, s.wait, 0)
	if err != nil || !response.GetAcquired() {
		return Lease{}, false, err
	}
	return Lease{
		Name: name, Token: response.GetToken(), FencingToken: response.GetFencingToken(),
		ExpiresAt: response.GetExpiresAt().AsTime(),
	}, true, nil
}

// Release gives the lock up, if the lease still holds it.
func (r *Locks) Release(ctx context.Context, lease Lease) (ReleaseStatus, error) {
	response, err := call(ctx, r.c, r.stub.Release, &lockv1.ReleaseRequest{Name: lease.Name, Token: lease.Token})
	return response.GetStatus(), err
}

// Extend sets the lease's time left to ttl from now: the lease with its new end, and
// false when it no longer held the lock.
func (r *Locks) Extend(ctx context.Context, lease Lease, ttl time.Duration) (Lease, bool, error) {
	request := &lockv1.ExtendRequest{Name: lease.Name, Token: lease.Token, Ttl: durationpb.New(ttl)}
	response, err := call(ctx, r.c, r.stub.Extend, request)
	if err != nil || !response.GetExtended() {
		return lease, false, err
	}
	lease.ExpiresAt = response.GetExpiresAt().AsTime()
	return lease, true, nil
}

// Inspect says whether the lock is held, its fencing token and time left.
func (r *Locks) Inspect(ctx context.Context, name string) (LockState, error) {
	response, err := call(ctx, r.c, r.stub.Inspect, &lockv1.InspectRequest{Name: name})
	if err != nil {
		return LockState{}, err
	}
	return LockState{
		Held: response.GetHeld(), FencingToken: response.GetFencingToken(),
		TTLRemaining: response.GetTtlRemaining().AsDuration(),
	}, nil
}

// ForceRelease ends whoever's lease on the name (an operator's tool); whether there was
// one. A Hold on it learns at its next renewal: its Lost channel closes.
func (r *Locks) ForceRelease(ctx context.Context, name string) (bool, error) {
	response, err := call(ctx, r.c, r.stub.ForceRelease, &lockv1.ForceReleaseRequest{Name: name})
	return response.GetReleased(), err
}

// Held is a lock held by Hold over the Locker.Hold stream: the server renews the lease
// every ttl/3 while the stream lasts, and releases it when the stream ends (Release, the
// context of Hold ending, or this process dying). Pass FencingToken to what the lock
// protects; stop the work when Context is done.
type Held struct {
	Name         string
	Token        string
	FencingToken uint64

	ctx    context.Context
	cancel context.CancelFunc // ends ctx
	parent context.Context
	end    context.CancelFunc // ends the stream
	locks  *Locks
	lost   chan struct{}
	done   chan struct{} // closed once the stream is read to its end
	once   sync.Once

	mu       sync.Mutex
	released bool
	err      error
}

// Context is done when the lock is no longer held: lost, released, or the context given
// to Hold ended. Do the work under it.
func (h *Held) Context() context.Context { return h.ctx }

// Lost is closed when the lease was lost before Release (force-released, expired during a
// Redis outage, or the stream failed): the work may no longer be alone. Err says why.
func (h *Held) Lost() <-chan struct{} { return h.lost }

// Err is why the lease was lost (an *Error: ABORTED with reason LEASE_LOST when the server
// reported it), or nil while it is held or after a Release.
func (h *Held) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Release ends the hold: it cancels the stream (the server releases the lock) and, unless
// the lease was lost, releases it by its token too, so that the lock is free when Release
// returns (if the server could be reached within the client's timeout; else the server
// releases it when it sees the stream end, or the lease expires within its ttl). It is
// safe to call more than once, and after a loss: defer it.
func (h *Held) Release() {
	h.once.Do(func() {
		h.mu.Lock()
		h.released = true
		h.mu.Unlock()
		h.end()
		<-h.done
		select {
		case <-h.lost:
		default:
			ctx, cancel := context.WithTimeout(context.WithoutCancel(h.parent), h.locks.c.timeout)
			defer cancel()
			_, _ = h.locks.Release(ctx, Lease{Name: h.Name, Token: h.Token})
		}
	})
}

// Hold takes the lock name (waiting up to Wait for it, else ErrNotAcquired) and keeps it
// until Release, renewed by the server every ttl/3, as a Held whose Context is cancelled
// and whose Lost channel closes if the lease is lost meanwhile. The first answer must
// come within the client's timeout plus the wait (else DEADLINE_EXCEEDED); the hold
// itself has no deadline but ctx's. Always Release it (defer h.Release()):
//
//	h, err := client.Locks().Hold(ctx, "nightly-report", 10*time.Second)
//	if err != nil {
//		return err
//	}
//	defer h.Release()
//	return work(h.Context(), h.FencingToken)
func (r *Locks) Hold(ctx context.Context, name string, ttl time.Duration, opts ...LockOption) (*Held, error) {
	s := lockOptions(opts)
	streamCtx, end := context.WithCancel(ctx)
	request := &lockv1.HoldRequest{Name: name, Ttl: durationpb.New(ttl), WaitTimeout: optionalDuration(s.wait)}
	// The stream has no deadline (it lasts as long as the work), but its first answer has:
	// the client's timeout, and the wait (opening the stream waits for a connection too).
	patience := r.c.timeout + s.wait
	late := time.AfterFunc(patience, end)
	stream, err := r.stub.Hold(streamCtx, request, r.c.callOpts...)
	var first *lockv1.HoldResponse
	if err == nil {
		first, err = stream.Recv()
	}
	if !late.Stop() { // the answer came too late: the stream is ended already
		end()
		return nil, &Error{Code: codes.DeadlineExceeded, Message: fmt.Sprintf("Hold gave no first answer within %v", patience)}
	}
	if err != nil {
		end()
		if errors.Is(err, io.EOF) {
			return nil, &Error{Code: codes.Internal, Message: "the Hold stream ended without an answer"}
		}
		return nil, asError(err)
	}
	acquired := first.GetAcquired()
	if acquired == nil {
		end()
		if first.GetNotAcquired() != nil {
			return nil, ErrNotAcquired
		}
		return nil, &Error{Code: codes.Internal, Message: "the Hold stream did not open with a grant"}
	}
	held := &Held{
		Name: name, Token: acquired.GetToken(), FencingToken: acquired.GetFencingToken(),
		parent: ctx, end: end, locks: r, lost: make(chan struct{}), done: make(chan struct{}),
	}
	held.ctx, held.cancel = context.WithCancel(ctx)
	go held.watch(stream.Recv)
	return held, nil
}

// watch reads the rest of the stream: `lost` is the only message that can follow
// `acquired`, and the error that ends the stream says why. Anything but the end this
// client asked for (Release, or the context of Hold ending) is a loss.
func (h *Held) watch(recv func() (*lockv1.HoldResponse, error)) {
	defer close(h.done)
	defer h.cancel()
	var err error
	for err == nil {
		_, err = recv()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released || h.parent.Err() != nil {
		return
	}
	if errors.Is(err, io.EOF) {
		err = &Error{Code: codes.Aborted, Message: "the Hold stream ended", Reason: "LEASE_LOST"}
	}
	h.err = asError(err)
	close(h.lost)
}

// Do holds the lock name for the length of fn (see Hold), and releases it when fn
// returns: fn's error is Do's. fn's ctx is cancelled if the lease is lost meanwhile
// (check held.Lost() or held.Err() to tell a loss from other ends).
func (r *Locks) Do(ctx context.Context, name string, ttl time.Duration, fn func(ctx context.Context, held *Held) error, opts ...LockOption) error {
	held, err := r.Hold(ctx, name, ttl, opts...)
	if err != nil {
		return err
	}
	defer held.Release()
	return fn(held.Context(), held)
}
