package patterns

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	streamsv1 "github.com/patterns-server/patterns-server/clients/go/patterns/streams/v1"
)

// How Close ends a consumer: it waits up to CloseGrace for gRPC to write the
// acknowledgements given so far (they are lost if the connection is stuck; the entries come
// back after the ack timeout), then, as the contract confirms no ack and the server drops
// the acks it has not read when the stream is cancelled, gives the server closeSettle after
// the last one written before it cancels the stream.
const (
	CloseGrace  = 2 * time.Second
	closeSettle = 500 * time.Millisecond
	maxIDs      = 10_000 // the contract's limit of ids in one Ack or Nack
)

// ErrConsumerClosed is what Message.Ack and Message.Nack return once the consumer is
// closed: the entry is delivered again after its ack timeout.
var ErrConsumerClosed = errors.New("patterns: the consumer is closed: the entry is delivered again after its timeout")

// Streams is the Streams service: durable events, kept until a consumer of each group
// acknowledges them, and replayable.
type Streams struct {
	c    *Client
	stub streamsv1.StreamsClient
}

// AppendOptions are an Append's optional parts: headers, and an idempotency key with its
// window (0: the server's 24 hours).
type AppendOptions struct {
	Headers           map[string]string
	IdempotencyKey    string
	IdempotencyWindow time.Duration
}

// Appended is what an Append gave: the entry's ID, and Duplicate when an earlier append of
// the same idempotency key made it (and this one added nothing).
type Appended struct {
	ID        string
	Duplicate bool
}

// Append adds payload at the end of stream (creating it).
func (r *Streams) Append(ctx context.Context, stream string, payload []byte, opts AppendOptions) (Appended, error) {
	request := &streamsv1.AppendRequest{
		Stream: stream, Payload: payload, Headers: opts.Headers, IdempotencyKey: opts.IdempotencyKey,
	}
	if opts.IdempotencyWindow != 0 {
		request.IdempotencyWindow = durationpb.New(opts.IdempotencyWindow)
	}
	response, err := call(ctx, r.c, r.stub.Append, request)
	return Appended{ID: response.GetId(), Duplicate: response.GetDuplicate()}, err
}

// StreamEntry is an entry as Read replays it: AppendedAt is the time part of its id (Redis
// clock, milliseconds).
type StreamEntry struct {
	ID         string
	Payload    []byte
	Headers    map[string]string
	AppendedAt time.Time
}

// ReadOptions say where Read starts: after AfterID (exclusive), or at AtTime, or (both
// zero) at the first entry retained; and at most Limit entries (0: the server's 100).
type ReadOptions struct {
	AfterID string
	AtTime  time.Time
	Limit   uint32
}

// Read replays retained entries in id order, without a consumer group: a page at a time
// (the next page is AfterID: the last entry's ID).
func (r *Streams) Read(ctx context.Context, stream string, opts ReadOptions) ([]StreamEntry, error) {
	request := &streamsv1.ReadRequest{Stream: stream, Limit: opts.Limit}
	switch {
	case opts.AfterID != "":
		request.Start = &streamsv1.ReadRequest_AfterId{AfterId: opts.AfterID}
	case !opts.AtTime.IsZero():
		request.Start = &streamsv1.ReadRequest_AtTime{AtTime: timestamppb.New(opts.AtTime)}
	}
	response, err := call(ctx, r.c, r.stub.Read, request)
	if err != nil {
		return nil, err
	}
	entries := make([]StreamEntry, 0, len(response.GetEntries()))
	for _, e := range response.GetEntries() {
		entries = append(entries, StreamEntry{
			ID: e.GetId(), Payload: e.GetPayload(), Headers: e.GetHeaders(), AppendedAt: e.GetAppendedAt().AsTime(),
		})
	}
	return entries, nil
}

// Retention bounds a stream, both bounds applied when both are set: about the last MaxLen
// entries, and entries younger than MaxAge (0: no such bound).
type Retention struct {
	MaxLen uint64
	MaxAge time.Duration
}

func (b Retention) proto() *streamsv1.Retention {
	retention := &streamsv1.Retention{MaxLen: b.MaxLen}
	if b.MaxAge != 0 {
		retention.MaxAge = durationpb.New(b.MaxAge)
	}
	return retention
}

// ConsumerInfo is a consumer of a group: entries delivered to it and not acknowledged, and
// how long since it last read.
type ConsumerInfo struct {
	Name    string
	Pending uint64
	Idle    time.Duration
}

// GroupInfo is a consumer group: entries delivered and not acknowledged (Pending), the
// last entry delivered to it, entries retained it has not been delivered yet (Lag), and its
// consumers.
type GroupInfo struct {
	Name            string
	Pending         uint64
	LastDeliveredID string
	Lag             uint64
	Consumers       []ConsumerInfo
}

// StreamInfo is what Info says of a stream (Exists false, and the rest empty, when there
// is none): entries retained, the first and last ids ("" when none), its retention and its
// groups.
type StreamInfo struct {
	Exists    bool
	Length    uint64
	FirstID   string
	LastID    string
	Retention Retention
	Groups    []GroupInfo
}

// Info describes stream.
func (r *Streams) Info(ctx context.Context, stream string) (StreamInfo, error) {
	response, err := call(ctx, r.c, r.stub.Info, &streamsv1.InfoRequest{Stream: stream})
	if err != nil {
		return StreamInfo{}, err
	}
	info := StreamInfo{
		Exists: response.GetExists(), Length: response.GetLength(),
		FirstID: response.GetFirstId(), LastID: response.GetLastId(),
		Retention: Retention{
			MaxLen: response.GetRetention().GetMaxLen(), MaxAge: response.GetRetention().GetMaxAge().AsDuration(),
		},
	}
	for _, g := range response.GetGroups() {
		group := GroupInfo{
			Name: g.GetName(), Pending: g.GetPending(), LastDeliveredID: g.GetLastDeliveredId(), Lag: g.GetLag(),
		}
		for _, c := range g.GetConsumers() {
			group.Consumers = append(group.Consumers,
				ConsumerInfo{Name: c.GetName(), Pending: c.GetPending(), Idle: c.GetIdle().AsDuration()})
		}
		info.Groups = append(info.Groups, group)
	}
	return info, nil
}

// Trim deletes entries from the start of stream once, beyond bounds; how many. It deletes
// at most about 10,000 per bound a call: call it again while it deleted some.
func (r *Streams) Trim(ctx context.Context, stream string, bounds Retention) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.Trim, &streamsv1.TrimRequest{Stream: stream, Bounds: bounds.proto()})
	return response.GetDeleted(), err
}

// SetRetention sets the bounds every later Append applies to stream (the zero Retention:
// none), and applies them now; how many entries that deleted.
func (r *Streams) SetRetention(ctx context.Context, stream string, retention Retention) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.SetRetention,
		&streamsv1.SetRetentionRequest{Stream: stream, Retention: retention.proto()})
	return response.GetDeleted(), err
}

// DeleteGroup deletes a consumer group with its pending entries; whether it existed. Its
// consumers end with ABORTED (reason GROUP_DELETED).
func (r *Streams) DeleteGroup(ctx context.Context, stream, group string) (bool, error) {
	response, err := call(ctx, r.c, r.stub.DeleteGroup, &streamsv1.DeleteGroupRequest{Stream: stream, Group: group})
	return response.GetDeleted(), err
}

// Start is where a group that does not exist yet starts reading its stream.
type Start int

const (
	// StartNew: entries appended from now on (the default).
	StartNew Start = iota
	// StartEarliest: every entry retained, then new ones.
	StartEarliest
	// StartAtID: entries after ConsumeOptions.StartID (exclusive).
	StartAtID
	// StartAtTime: entries appended at or after ConsumeOptions.StartTime.
	StartAtTime
)

// ConsumeOptions open a consumer: Stream, Group and Consumer (this consumer's name in the
// group) are required; the rest, zero, takes the server's defaults (MaxInFlight 10,
// AckTimeout 30 s, MaxDeliveries 5).
type ConsumeOptions struct {
	Stream, Group, Consumer string
	Start                   Start
	StartID                 string
	StartTime               time.Time
	MaxInFlight             uint32
	AckTimeout              time.Duration
	MaxDeliveries           uint32
}

func (o ConsumeOptions) request() *streamsv1.ConsumeRequest {
	open := &streamsv1.ConsumeOpen{
		Stream: o.Stream, Group: o.Group, Consumer: o.Consumer, StartId: o.StartID,
		MaxInFlight: o.MaxInFlight, MaxDeliveries: o.MaxDeliveries,
	}
	switch o.Start {
	case StartEarliest:
		open.Start = streamsv1.StartPosition_START_POSITION_EARLIEST
	case StartAtID:
		open.Start = streamsv1.StartPosition_START_POSITION_AT_ID
	case StartAtTime:
		open.Start = streamsv1.StartPosition_START_POSITION_AT_TIME
		open.StartTime = timestamppb.New(o.StartTime)
	default:
		open.Start = streamsv1.StartPosition_START_POSITION_NEW
	}
	if o.AckTimeout != 0 {
		open.AckTimeout = durationpb.New(o.AckTimeout)
	}
	return &streamsv1.ConsumeRequest{Kind: &streamsv1.ConsumeRequest_Open{Open: open}}
}

// Message is an entry delivered to a consumer: DeliveryCount is 1 the first time, more
// when redelivered; FirstDeliveredAt is when it was first delivered to the group,
// AppendedAt the time part of its id (both by the Redis clock). Ack it once handled, or
// Nack it to have it delivered again.
type Message struct {
	ID               string
	Payload          []byte
	Headers          map[string]string
	DeliveryCount    uint32
	FirstDeliveredAt time.Time
	AppendedAt       time.Time

	consumer *Consumer
}

// Ack acknowledges the message: handled, never to be delivered again. It never blocks: the
// ack is sent on the consumer's stream (the next one, if it is being opened again), with
// the others given meanwhile. ErrConsumerClosed once the consumer is closed.
func (m *Message) Ack() error {
	return m.consumer.send(answer{id: m.ID})
}

// Nack hands the message back: delivered again (to this consumer or another of the group)
// after delay (0: at the server's next check, within a second), its delivery count one
// higher. A delay below 0 or above the consumer's ack timeout is an INVALID_ARGUMENT
// *Error, and nothing is sent (the server's refusal would end the stream).
func (m *Message) Nack(delay time.Duration) error {
	m.consumer.mu.Lock()
	ackTimeout := m.consumer.ackTimeout
	m.consumer.mu.Unlock()
	if delay < 0 || (ackTimeout > 0 && delay > ackTimeout) {
		problem := "must be 0 to the ack timeout (" + ackTimeout.String() + "); got " + delay.String()
		return &Error{
			Code: codes.InvalidArgument, Message: "nack.delay " + problem, Reason: "INVALID_ARGUMENT",
			FieldViolations: []FieldViolation{{Field: "nack.delay", Description: problem}},
		}
	}
	return m.consumer.send(answer{id: m.ID, nack: true, delay: delay})
}

// answer is an ack, or a nack with its delay, waiting to be written.
type answer struct {
	id    string
	nack  bool
	delay time.Duration
}

// Consume opens a consumer of a group until Close (or ctx ends): see Consumer.
func (r *Streams) Consume(ctx context.Context, opts ConsumeOptions) *Consumer {
	ctx, cancel := context.WithCancel(ctx)
	c := &Consumer{
		messages: make(chan *Message), done: make(chan struct{}), cancel: cancel,
		subscribed: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	go c.run(ctx, r, opts.request())
	return c
}

// Consumer is the messages of a group's consumer. It opens its stream again when it fails
// in a way that retrying cures (the server or its Redis unavailable, the server restarting:
// UNAVAILABLE, RESOURCE_EXHAUSTED), after a backoff doubling from FirstBackoff to
// LastBackoff and at least the server's RetryInfo. Nothing is lost: the group and its
// pending entries live in Redis, and what was delivered and not acknowledged comes back by
// redelivery, its DeliveryCount one higher. Acks the broken stream did not carry go on the
// next one. Any other failure (INVALID_ARGUMENT, ABORTED GROUP_DELETED, a refused key)
// ends it: Messages closes and Err says why.
//
// Read it with Next or from Messages, from one goroutine or several; always Close it.
type Consumer struct {
	messages chan *Message
	done     chan struct{} // closed when the goroutine that reads the streams has ended
	cancel   context.CancelFunc
	wake     chan struct{} // the writer has answers to write, or the consumer is closing

	mu         sync.Mutex
	subscribed chan struct{} // closed while the server confirms the consumer
	err        error
	closing    bool
	unsent     []answer
	ackTimeout time.Duration // in force, as the server confirmed it
	written    chan struct{} // the open stream's writer has ended; nil between streams
	lastWrite  time.Time     // when the writer last wrote an answer
}

// Messages is the consumer's messages, closed when it ends (then Err says whether a failure
// ended it). Receive from it, or call Next: they share the messages.
func (c *Consumer) Messages() <-chan *Message { return c.messages }

// Next is the next message. It returns ctx's error when ctx ends first, Err when a failure
// ended the consumer, ErrClosed when it was closed.
func (c *Consumer) Next(ctx context.Context) (*Message, error) {
	select {
	case message, ok := <-c.messages:
		if !ok {
			return nil, c.ended()
		}
		return message, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WaitSubscribed returns once the server has confirmed the consumer (its group made if
// new): an entry appended after it returns reaches the group. It consumes no message. It
// returns ctx's error when ctx ends first (the consumer goes on trying), Err when a
// failure ended the consumer, ErrClosed when it was closed.
func (c *Consumer) WaitSubscribed(ctx context.Context) error {
	c.mu.Lock()
	subscribed := c.subscribed
	c.mu.Unlock()
	select {
	case <-subscribed:
		return nil
	case <-c.done:
		return c.ended()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err is the failure that ended the consumer (an *Error), or nil.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Consumer) ended() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Close ends the consumer: the acks and nacks given so far are written (waiting at most
// CloseGrace), the stream is cancelled half a second after the last (time for the server
// to apply them), and Close returns once it is. Messages delivered and not acknowledged go
// to the group again after the ack timeout. It always returns nil (an io.Closer).
func (c *Consumer) Close() error {
	c.mu.Lock()
	already := c.closing
	c.closing = true
	written := c.written
	c.mu.Unlock()
	if !already && written != nil {
		c.signal()
		select {
		case <-written:
			c.mu.Lock()
			settle := time.Until(c.lastWrite.Add(closeSettle))
			c.mu.Unlock()
			if settle > 0 {
				time.Sleep(settle)
			}
		case <-time.After(CloseGrace):
		case <-c.done:
		}
	}
	c.cancel()
	<-c.done
	return nil
}

// send queues an answer for the writer, never blocking.
func (c *Consumer) send(a answer) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrConsumerClosed
	}
	c.unsent = append(c.unsent, a)
	c.mu.Unlock()
	c.signal()
	return nil
}

func (c *Consumer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run opens the stream, again and again after each interruption that retrying cures, until
// ctx ends or another failure does.
func (c *Consumer) run(ctx context.Context, r *Streams, open *streamsv1.ConsumeRequest) {
	defer close(c.done)
	defer close(c.messages)
	backoff := newBackoff()
	for ctx.Err() == nil {
		err := c.stream(ctx, r, open, backoff)
		c.mu.Lock()
		select {
		case <-c.subscribed: // confirmed until now: no longer
			c.subscribed = make(chan struct{})
		default:
		}
		closing := c.closing
		c.mu.Unlock()
		if ctx.Err() != nil || closing {
			return
		}
		var e *Error
		if !errors.As(err, &e) || (e.Code != codes.Unavailable && e.Code != codes.ResourceExhausted) {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
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

// stream reads one Consume stream to its end: the error that ended it (a stream the server
// ends without one reads as UNAVAILABLE: open it again).
func (c *Consumer) stream(ctx context.Context, r *Streams, open *streamsv1.ConsumeRequest, backoff *backoff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.stub.Consume(ctx, r.c.callOpts...)
	if err != nil {
		return asError(err)
	}
	if err := stream.Send(open); err != nil {
		_, err = stream.Recv() // the status that ended the stream
		return asError(err)
	}
	written := make(chan struct{})
	c.mu.Lock()
	c.written = written
	c.mu.Unlock()
	go c.write(ctx, stream, written)
	c.signal() // the answers the last stream did not carry
	defer func() {
		cancel()
		<-written
		c.mu.Lock()
		c.written = nil
		c.mu.Unlock()
	}()
	for {
		response, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return &Error{Code: codes.Unavailable, Message: "the server ended the stream"}
			}
			return asError(err)
		}
		if subscribed := response.GetSubscribed(); subscribed != nil {
			c.mu.Lock()
			c.ackTimeout = subscribed.GetAckTimeout().AsDuration()
			select {
			case <-c.subscribed:
			default:
				close(c.subscribed)
			}
			c.mu.Unlock()
			backoff.reset()
			continue
		}
		d := response.GetDelivery()
		if d == nil {
			continue
		}
		message := &Message{
			ID: d.GetId(), Payload: d.GetPayload(), Headers: d.GetHeaders(), DeliveryCount: d.GetDeliveryCount(),
			FirstDeliveredAt: d.GetFirstDeliveredAt().AsTime(), AppendedAt: d.GetAppendedAt().AsTime(),
			consumer: c,
		}
		// What arrives while closing is not handed out: it is delivered again, later.
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			continue
		}
		select {
		case c.messages <- message:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// write sends the answers queued, as few messages as the contract allows, until the stream
// ends or the consumer closes (then it ends the client's side). Answers it could not write
// stay queued for the next stream.
func (c *Consumer) write(ctx context.Context, stream streamsv1.Streams_ConsumeClient, written chan struct{}) {
	defer close(written)
	for {
		select {
		case <-c.wake:
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		batch, closing := c.unsent, c.closing
		c.unsent = nil
		c.mu.Unlock()
		requests := coalesce(batch)
		for i, request := range requests {
			if err := stream.Send(request); err != nil {
				c.mu.Lock()
				c.unsent = append(answersOf(requests[i:]), c.unsent...)
				c.mu.Unlock()
				return
			}
			c.mu.Lock()
			c.lastWrite = time.Now()
			c.mu.Unlock()
		}
		if closing {
			_ = stream.CloseSend()
			return
		}
	}
}

// coalesce puts the answers in as few messages as the contract allows: the acks in one,
// the nacks of one delay in one.
func coalesce(batch []answer) []*streamsv1.ConsumeRequest {
	var acks []string
	var delays []time.Duration
	nacks := map[time.Duration][]string{}
	for _, a := range batch {
		switch {
		case !a.nack:
			acks = append(acks, a.id)
		default:
			if _, seen := nacks[a.delay]; !seen {
				delays = append(delays, a.delay)
			}
			nacks[a.delay] = append(nacks[a.delay], a.id)
		}
	}
	var requests []*streamsv1.ConsumeRequest
	for ids := range chunks(acks) {
		requests = append(requests, &streamsv1.ConsumeRequest{
			Kind: &streamsv1.ConsumeRequest_Ack{Ack: &streamsv1.Ack{Ids: ids}},
		})
	}
	for _, delay := range delays {
		for ids := range chunks(nacks[delay]) {
			nack := &streamsv1.Nack{Ids: ids}
			if delay > 0 {
				nack.Delay = durationpb.New(delay)
			}
			requests = append(requests, &streamsv1.ConsumeRequest{Kind: &streamsv1.ConsumeRequest_Nack{Nack: nack}})
		}
	}
	return requests
}

// answersOf is the answers of requests not written, to queue them again.
func answersOf(requests []*streamsv1.ConsumeRequest) []answer {
	var answers []answer
	for _, request := range requests {
		for _, id := range request.GetAck().GetIds() {
			answers = append(answers, answer{id: id})
		}
		if nack := request.GetNack(); nack != nil {
			for _, id := range nack.GetIds() {
				answers = append(answers, answer{id: id, nack: true, delay: nack.GetDelay().AsDuration()})
			}
		}
	}
	return answers
}

// chunks is ids by maxIDs.
func chunks(ids []string) func(yield func([]string) bool) {
	return func(yield func([]string) bool) {
		for start := 0; start < len(ids); start += maxIDs {
			if !yield(ids[start:min(start+maxIDs, len(ids))]) {
				return
			}
		}
	}
}
