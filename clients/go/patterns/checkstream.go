package patterns

// Rate-limit checks sent over one shared RateLimiter.CheckStream, as the Python client's
// _check_stream.py does: each check is one message on the client's one stream, matched to
// its answer by id, so the server decides the checks that arrive together in one Redis
// round trip instead of serving a unary Check each.
//
// The goroutines: a check registers its id and a channel for its answer, puts its request
// on the stream's queue, and waits for the answer or its own deadline. One goroutine per
// stream opens the call and writes the queue (gRPC allows one writer at a time), one
// reads the answers (one reader). A check that gives up never touches the call: it only
// forgets its id, and its late answer is dropped.
//
// What a check answers is exactly what a unary Check would have: its decision, the same
// *Error for its error, DEADLINE_EXCEEDED (or CANCELED) when its context ends first, and
// the stream's own status for the checks in progress when the stream ends (UNAVAILABLE
// when the connection broke, say). The next check then opens a new stream (gRPC's
// connection backoff paces the attempts). A stream refused before it answered anything
// (an older server: UNIMPLEMENTED; the server's or the tenant's share of streams:
// RESOURCE_EXHAUSTED) decided nothing, so its checks are sent as unary Checks instead,
// and so are the next ones (for good after UNIMPLEMENTED, for the refusal's RetryAfter
// else).

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	ratelimitv1 "github.com/patterns-server/patterns-server/clients/go/patterns/ratelimit/v1"
)

// maxInProgress is the contract's limit of checks in progress on one stream; a check
// beyond it goes unary (the server would refuse it OVERLOADED). The queue of requests not
// yet written holds as many: while the server is paused, checks that gave up would
// otherwise pile up there unsent.
const maxInProgress = 1000

// refusedFor is how long checks go unary after a stream was refused for want of a stream
// slot, when the refusal names no RetryAfter.
const refusedFor = time.Second

// checkStream is the checks of one Client over one shared CheckStream, opened by the first
// check, and again by the first check after it ended.
type checkStream struct {
	c    *Client
	stub ratelimitv1.RateLimiterClient

	mu           sync.Mutex
	current      *streamCall
	lastID       uint64    // ids are unique across the client's streams
	unaryUntil   time.Time // checks go unary until then (a stream refused RESOURCE_EXHAUSTED)
	unaryForGood bool      // the server has no CheckStream (UNIMPLEMENTED)
	closed       bool      // Close was called: checks go unary
}

// outcome is what a check sent on a stream gets back.
type outcome struct {
	response *ratelimitv1.CheckResponse
	err      error
	refused  bool // the stream was refused before deciding anything: send the check unary
}

// check is request's answer before ctx ends (ctx carries the check's deadline), or the
// error a unary Check with that deadline would have returned.
func (s *checkStream) check(ctx context.Context, request *ratelimitv1.CheckRequest) (*ratelimitv1.CheckResponse, error) {
	call, id, answer := s.send(request)
	if call == nil {
		return s.unary(ctx, request)
	}
	var got outcome
	select {
	case got = <-answer:
	case <-ctx.Done():
		if call.forget(id) {
			return nil, asError(status.FromContextError(ctx.Err()).Err())
		}
		got = <-answer // answered just as the wait ran out
	}
	if got.refused { // nothing decided: as a unary Check, in the time left
		return s.unary(ctx, request)
	}
	return got.response, got.err
}

// send puts request on the open stream, opening one if there is none (or it ended): the
// stream, the check's id and the channel of its answer; a nil stream when checks go unary
// for now, or the stream is full.
func (s *checkStream) send(request *ratelimitv1.CheckRequest) (*streamCall, uint64, chan outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.unaryForGood || time.Now().Before(s.unaryUntil) {
		return nil, 0, nil
	}
	for range 2 { // the stream may have ended between the look and the send
		call := s.current
		if call == nil || call.hasEnded() {
			call = s.open()
			s.current = call
		}
		s.lastID++
		answer, full := call.send(s.lastID, request)
		if answer != nil {
			return call, s.lastID, answer
		}
		if full {
			return nil, 0, nil
		}
	}
	return nil, 0, nil
}

// open starts a stream: its goroutine opens the call (which waits for a connection), so
// that no check waits for it longer than its own deadline.
func (s *checkStream) open() *streamCall {
	ctx, cancel := context.WithCancel(context.Background())
	call := &streamCall{
		owner: s, ctx: ctx, cancel: cancel,
		outgoing: make(chan *ratelimitv1.CheckStreamRequest, maxInProgress),
		ended:    make(chan struct{}),
		waiting:  map[uint64]chan outcome{},
	}
	call.running.Add(1)
	go call.write()
	return call
}

// refused is told by a stream refused before it answered (before a check can open the
// next one): checks go unary for good (UNIMPLEMENTED) or for a while.
func (s *checkStream) refused(e *Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Code == codes.Unimplemented {
		s.unaryForGood = true
		return
	}
	s.unaryUntil = time.Now().Add(positive(e.RetryAfter, refusedFor))
}

func (s *checkStream) unary(ctx context.Context, request *ratelimitv1.CheckRequest) (*ratelimitv1.CheckResponse, error) {
	response, err := s.stub.Check(ctx, request, s.c.callOpts...)
	return response, asError(err)
}

// inProgress is how many checks wait for the stream's answers (for tests).
func (s *checkStream) inProgress() int {
	s.mu.Lock()
	call := s.current
	s.mu.Unlock()
	if call == nil {
		return 0
	}
	call.mu.Lock()
	defer call.mu.Unlock()
	return len(call.waiting)
}

// close ends the stream (its checks in progress fail CANCELED, as a unary call's do when
// its connection closes) and waits for its goroutines; later checks go unary.
func (s *checkStream) close() {
	s.mu.Lock()
	call := s.current
	s.current, s.closed = nil, true
	s.mu.Unlock()
	if call != nil {
		call.cancel()
		call.running.Wait()
	}
}

// streamCall is one CheckStream call, its two goroutines, and the checks waiting for its
// answers.
type streamCall struct {
	owner    *checkStream
	ctx      context.Context
	cancel   context.CancelFunc
	outgoing chan *ratelimitv1.CheckStreamRequest
	ended    chan struct{} // closed when the stream has ended
	running  sync.WaitGroup

	mu       sync.Mutex
	waiting  map[uint64]chan outcome // nil once ended
	answered bool                    // whether any check was answered
}

// send registers check id and queues its request: the channel of its answer, or nil and
// whether the stream is full (else it has ended).
func (call *streamCall) send(id uint64, request *ratelimitv1.CheckRequest) (chan outcome, bool) {
	call.mu.Lock()
	defer call.mu.Unlock()
	if call.waiting == nil {
		return nil, false
	}
	if len(call.waiting) >= maxInProgress {
		return nil, true
	}
	select {
	case call.outgoing <- &ratelimitv1.CheckStreamRequest{Id: id, Check: request}:
	default: // as many unwritten
		return nil, true
	}
	answer := make(chan outcome, 1) // the reader never waits to deliver
	call.waiting[id] = answer
	return answer, false
}

// forget stops waiting for check id: true when it was still unanswered (its answer, if
// one comes, is dropped), false when its answer is in hand or on its way.
func (call *streamCall) forget(id uint64) bool {
	call.mu.Lock()
	defer call.mu.Unlock()
	_, waiting := call.waiting[id]
	delete(call.waiting, id)
	return waiting
}

func (call *streamCall) hasEnded() bool {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.waiting == nil
}

func (call *streamCall) isWaiting(id uint64) bool {
	call.mu.Lock()
	defer call.mu.Unlock()
	_, waiting := call.waiting[id]
	return waiting
}

// write opens the call, starts its reader, and writes the queued requests until the
// stream ends; a check that gave up before its turn is left out (nobody would read its
// answer).
func (call *streamCall) write() {
	defer call.running.Done()
	s := call.owner
	stream, err := s.stub.CheckStream(call.ctx, s.c.callOpts...)
	if err != nil {
		call.end(err)
		return
	}
	call.running.Add(1)
	go call.read(stream)
	for {
		select {
		case request := <-call.outgoing:
			if !call.isWaiting(request.GetId()) {
				continue
			}
			if stream.Send(request) != nil {
				return // the stream ended: the reader gets its status
			}
		case <-call.ended:
			return
		}
	}
}

// read hands each answer to its check, until the stream ends.
func (call *streamCall) read(stream grpc.BidiStreamingClient[ratelimitv1.CheckStreamRequest, ratelimitv1.CheckStreamResponse]) {
	defer call.running.Done()
	for {
		response, err := stream.Recv()
		if err != nil {
			call.end(err)
			return
		}
		call.mu.Lock()
		call.answered = true
		answer := call.waiting[response.GetId()]
		delete(call.waiting, response.GetId())
		call.mu.Unlock()
		if answer != nil {
			answer <- outcomeOf(response)
		}
	}
}

// end fails the checks in progress as the stream's end says (or sends them unary, when
// the stream was refused), once.
func (call *streamCall) end(err error) {
	call.mu.Lock()
	answered := call.answered
	call.mu.Unlock()
	failure, refused := endedError(err, answered)
	if refused {
		call.owner.refused(failure) // before a check can open the next stream
	}
	call.mu.Lock()
	waiting := call.waiting
	call.waiting = nil
	call.mu.Unlock()
	close(call.ended)
	call.cancel() // frees the call's resources
	for _, answer := range waiting {
		copied := *failure // each caller its own
		answer <- outcome{err: &copied, refused: refused}
	}
}

// endedError is what the checks in progress fail with when their stream ended with err
// (io.EOF: ended OK, which the server does only once the client stopped sending), and
// whether the stream was refused before it decided anything.
func endedError(err error, answered bool) (*Error, bool) {
	if errors.Is(err, io.EOF) {
		return &Error{Code: codes.Unavailable, Message: "the check stream ended before answering"}, false
	}
	var e *Error
	if !errors.As(asError(err), &e) {
		return &Error{Code: codes.Unavailable, Message: err.Error()}, false
	}
	refused := !answered && (e.Code == codes.Unimplemented || e.Code == codes.ResourceExhausted)
	return e, refused
}

// outcomeOf is a response's decision, or the error its check fails with.
func outcomeOf(response *ratelimitv1.CheckStreamResponse) outcome {
	if result := response.GetResult(); result != nil {
		return outcome{response: result}
	}
	return outcome{err: checkError(response.GetError())}
}

// checkError is the *Error of one check's error on a stream (a CheckError: the status a
// unary Check would have ended with, flattened): the same code, message, reason, field
// violation and RetryAfter, and a status carrying them as details.
func checkError(c *ratelimitv1.CheckError) *Error {
	e := &Error{Code: codes.Code(c.GetCode()), Message: c.GetMessage(), Reason: c.GetReason()}
	var details []protoadapt.MessageV1
	if e.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.Reason, Domain: "patterns-server"})
	}
	if field := c.GetField(); field != "" {
		// The server's message is "<field>: <description>"; BadRequest carries the
		// description alone, and so does the unary failure's FieldViolation.
		violation := FieldViolation{Field: field, Description: strings.TrimPrefix(e.Message, field+": ")}
		e.FieldViolations = []FieldViolation{violation}
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: violation.Field, Description: violation.Description},
		}})
	}
	if c.GetRetryAfter() != nil {
		e.RetryAfter = c.GetRetryAfter().AsDuration()
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	e.status = status.New(e.Code, e.Message)
	if withDetails, err := e.status.WithDetails(details...); err == nil {
		e.status = withDetails
	}
	return e
}
