package patterns

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	eventsv1 "github.com/patterns-server/patterns-server/clients/go/patterns/events/v1"
)

// The waits between a subscription's attempts: doubled after each failure in a row, from
// FirstBackoff up to LastBackoff, with jitter, and at least what the server's RetryInfo
// asks.
const (
	FirstBackoff = 100 * time.Millisecond
	LastBackoff  = 5 * time.Second
)

// ErrClosed is what the Next and WaitSubscribed of a Subscription (or a Consumer) return
// once it is closed (Close, or the context given to Subscribe or Consume ended) without a
// failure of its own.
var ErrClosed = errors.New("patterns: subscription closed")

// Events is the Events service: publish, and subscriptions that survive outages and say
// what they missed.
type Events struct {
	c    *Client
	stub eventsv1.EventsClient
}

// Publish sends payload to channel; how many Redis subscriber connections took it (each
// server process counts once, however many of its streams receive it).
func (r *Events) Publish(ctx context.Context, channel string, payload []byte) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.Publish, &eventsv1.PublishRequest{Channel: channel, Payload: payload})
	return response.GetReceivers(), err
}

// Item is what a Subscription delivers: an Event or a Gap.
type Item interface{ isItem() }

// Event is a message: its channel, the pattern it matched ("" for a channel
// subscription), its payload, and when the server received it.
type Event struct {
	Channel    string
	Pattern    string
	Payload    []byte
	ReceivedAt time.Time
}

// Gap says the subscription was interrupted by Err and is back: events published in
// between were lost (Pub/Sub keeps nothing for absent subscribers), so reload what you
// derive from them.
type Gap struct {
	Err error
}

func (Event) isItem() {}
func (Gap) isItem()   {}

// Subscribe subscribes to channels until Close (or ctx ends): see Subscription.
func (r *Events) Subscribe(ctx context.Context, channels ...string) *Subscription {
	return r.subscribe(ctx, channels, nil)
}

// PSubscribe subscribes to the channels that glob patterns match ("orders.*"), as
// Subscribe does.
func (r *Events) PSubscribe(ctx context.Context, patterns ...string) *Subscription {
	return r.subscribe(ctx, nil, patterns)
}

// Subscription is a stream of Items (Events, and a Gap after each interruption) that
// resubscribes when its stream fails in a way that retrying cures: the server or its
// Redis unavailable, the server restarting, the server or the caller's tenant at its
// limit of streams, or this reader too slow (UNAVAILABLE, RESOURCE_EXHAUSTED), after a
// backoff doubling from FirstBackoff to LastBackoff and at least the server's RetryInfo.
// Once subscribed again it delivers a Gap. Any other failure (INVALID_ARGUMENT, a refused
// API key) ends it: Items closes and Err says why.
//
// It asks the server for batches (cheaper when the reader falls behind) and delivers their
// events one by one. Read it with Next or from Items, from one goroutine or several;
// always Close it.
type Subscription struct {
	items  chan Item
	done   chan struct{} // closed when the goroutine that reads the streams has ended
	cancel context.CancelFunc

	mu         sync.Mutex
	subscribed chan struct{} // closed while the server confirms the subscription
	err        error
}

func (r *Events) subscribe(ctx context.Context, channels, patterns []string) *Subscription {
	ctx, cancel := context.WithCancel(ctx)
	s := &Subscription{
		items: make(chan Item), done: make(chan struct{}), cancel: cancel,
		subscribed: make(chan struct{}),
	}
	request := &eventsv1.SubscribeRequest{Channels: channels, Patterns: patterns, Batch: true}
	go s.run(ctx, r, request)
	return s
}

// Items is the subscription's items, closed when it ends (then Err says whether a failure
// ended it). Receive from it, or call Next: they share the items.
func (s *Subscription) Items() <-chan Item { return s.items }

// Next is the next item: an Event or a Gap. It returns ctx's error when ctx ends first,
// Err when a failure ended the subscription, ErrClosed when it was closed.
func (s *Subscription) Next(ctx context.Context) (Item, error) {
	select {
	case item, ok := <-s.items:
		if !ok {
			return nil, s.ended()
		}
		return item, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WaitSubscribed returns once the server has confirmed the subscription: every event
// published after it returns reaches the subscription. It consumes no item. It returns
// ctx's error when ctx ends first (the subscription goes on trying), Err when a failure
// ended the subscription, ErrClosed when it was closed.
func (s *Subscription) WaitSubscribed(ctx context.Context) error {
	s.mu.Lock()
	subscribed := s.subscribed
	s.mu.Unlock()
	select {
	case <-subscribed:
		return nil
	case <-s.done:
		return s.ended()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err is the failure that ended the subscription (an *Error), or nil.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscription) ended() error {
	if err := s.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Close ends the subscription and waits until its stream is closed. It always returns
// nil (an io.Closer).
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// run subscribes, again and again after each interruption that retrying cures, until ctx
// ends or another failure does.
func (s *Subscription) run(ctx context.Context, r *Events, request *eventsv1.SubscribeRequest) {
	defer close(s.done)
	defer close(s.items)
	backoff := newBackoff()
	var interrupted error // the first failure since the last confirmation
	for ctx.Err() == nil {
		err := s.stream(ctx, r, request, &interrupted, backoff)
		s.mu.Lock()
		select {
		case <-s.subscribed: // confirmed until now: no longer
			s.subscribed = make(chan struct{})
		default:
		}
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		var e *Error
		if !errors.As(err, &e) || (e.Code != codes.Unavailable && e.Code != codes.ResourceExhausted) {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		if interrupted == nil {
			interrupted = err
		}
		wait := time.NewTimer(backoff.after(e.RetryAfter))
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return
		}
	}
}

// stream reads one Subscribe stream to its end: the error that ended it (a stream the
// server ends without one reads as UNAVAILABLE: subscribe again).
func (s *Subscription) stream(ctx context.Context, r *Events, request *eventsv1.SubscribeRequest, interrupted *error, backoff *backoff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.stub.Subscribe(ctx, request, r.c.callOpts...)
	if err != nil {
		return asError(err)
	}
	for {
		message, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return &Error{Code: codes.Unavailable, Message: "the server ended the subscription"}
			}
			return asError(err)
		}
		if message.GetSubscribed() != nil {
			s.mu.Lock()
			select {
			case <-s.subscribed:
			default:
				close(s.subscribed)
			}
			s.mu.Unlock()
			backoff.reset()
			if *interrupted != nil {
				gap := Gap{Err: *interrupted}
				*interrupted = nil
				if !s.deliver(ctx, gap) {
					return ctx.Err()
				}
			}
			continue
		}
		events := message.GetBatch().GetEvents()
		if event := message.GetEvent(); event != nil { // a server older than batches
			events = append(events, event)
		}
		for _, e := range events {
			item := Event{
				Channel: e.GetChannel(), Pattern: e.GetPattern(), Payload: e.GetPayload(),
				ReceivedAt: e.GetReceivedAt().AsTime(),
			}
			if !s.deliver(ctx, item) {
				return ctx.Err()
			}
		}
	}
}

// deliver hands item to a reader; false when the subscription ended first.
func (s *Subscription) deliver(ctx context.Context, item Item) bool {
	select {
	case s.items <- item:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is the waits between attempts: doubling from FirstBackoff, with jitter, at
// least what the server asked for.
type backoff struct{ next time.Duration }

func newBackoff() *backoff { return &backoff{next: FirstBackoff} }

func (b *backoff) reset() { b.next = FirstBackoff }

// after is the wait before the next attempt, after a failure whose RetryInfo asked for
// retryAfter (0: nothing).
func (b *backoff) after(retryAfter time.Duration) time.Duration {
	delay := time.Duration(float64(b.next) * (0.5 + rand.Float64()/2))
	b.next = min(LastBackoff, b.next*2)
	return max(delay, retryAfter)
}
