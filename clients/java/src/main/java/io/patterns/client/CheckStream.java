package io.patterns.client;

import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.patterns.ratelimit.v1.CheckError;
import io.patterns.ratelimit.v1.CheckRequest;
import io.patterns.ratelimit.v1.CheckResponse;
import io.patterns.ratelimit.v1.CheckStreamRequest;
import io.patterns.ratelimit.v1.CheckStreamResponse;
import io.patterns.ratelimit.v1.RateLimiterGrpc;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The rate-limit checks of one client sent as messages of one shared RateLimiter.CheckStream,
 * as the Python client's (clients/python/patterns_client/_check_stream.py): many threads
 * check at once, each check is one message matched to its answer by id, and the server
 * decides the checks that arrive together in one Redis round trip.
 *
 * <p>The threads: a check registers a future under its id, queues its request and writes
 * what the call is ready to take (gRPC's onReady handler writes the rest), one writer at a
 * time (a call's writes must not overlap); gRPC's executor delivers the answers, which
 * complete the futures. A check that gives up only forgets its id: its request is then not
 * written if still queued, and its late answer is dropped.
 *
 * <p>What a check answers is what a unary Check would have: its decision, the same
 * PatternsException for its error, DEADLINE_EXCEEDED when no answer came within its timeout,
 * and the stream's own status for the checks in progress when the stream ends (UNAVAILABLE
 * when the connection broke). The next check then opens a new stream (gRPC's channel paces
 * reconnections with its backoff). A stream refused before it answered anything (an older
 * server: UNIMPLEMENTED; the server's or the tenant's share of streams: RESOURCE_EXHAUSTED)
 * decided nothing, so its checks are sent as unary Checks instead, and so are the next ones
 * (for good after UNIMPLEMENTED, for the refusal's retry-after else).
 */
final class CheckStream {
  /**
   * The contract's limit of checks in progress on one stream; a check beyond it goes unary
   * (the server would refuse it OVERLOADED). The requests not yet written are held to it
   * too: while the server is paused, the checks that gave up would otherwise pile up unsent.
   */
  static final int MAX_IN_PROGRESS = 1_000;
  /** How long checks go unary after a refusal for want of a stream slot that names no retry-after. */
  static final Duration REFUSED_FOR = Duration.ofSeconds(1);
  private static final Set<Status.Code> REFUSALS = Set.of(Status.Code.UNIMPLEMENTED, Status.Code.RESOURCE_EXHAUSTED);

  private final RateLimiterGrpc.RateLimiterStub async;
  private final RateLimiterGrpc.RateLimiterBlockingStub blocking;
  private final AtomicLong ids = new AtomicLong(); // unique across the client's streams
  private final Object lock = new Object();
  private Stream stream; // guarded by lock
  private boolean unary; // guarded by lock: checks go unary (for good, or until unaryUntil)
  private boolean unaryForGood; // guarded by lock
  private long unaryUntil; // guarded by lock, System.nanoTime()

  CheckStream(Calls calls) {
    this.async = calls.prepare(RateLimiterGrpc.newStub(calls.channel));
    this.blocking = calls.prepare(RateLimiterGrpc.newBlockingStub(calls.channel));
  }

  /** The answer to {@code request} within {@code timeout}, or the PatternsException a unary Check would throw. */
  CheckResponse check(CheckRequest request, Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    Pending pending = send(request);
    if (pending == null) {
      return unary(request, timeout);
    }
    try {
      return pending.answer.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
    } catch (TimeoutException late) {
      if (pending.stream.forget(pending.id)) {
        throw deadlineExceeded(timeout);
      }
      // Answered just as the wait ran out: the answer is being delivered.
      try {
        return pending.answer.join();
      } catch (java.util.concurrent.CompletionException failed) {
        return failed(request, deadline, failed.getCause());
      }
    } catch (ExecutionException failed) {
      return failed(request, deadline, failed.getCause());
    } catch (InterruptedException interrupted) {
      pending.stream.forget(pending.id);
      Thread.currentThread().interrupt();
      // As a blocking unary call interrupted.
      throw new PatternsException(Status.Code.CANCELLED, "Thread interrupted", "", List.of(), null, interrupted);
    }
  }

  /** {@link #check} without blocking: the future fails with the PatternsException. */
  CompletableFuture<CheckResponse> checkAsync(CheckRequest request, Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    Pending pending = send(request);
    if (pending == null) {
      return unaryAsync(request, timeout);
    }
    CompletableFuture.delayedExecutor(timeout.toNanos(), TimeUnit.NANOSECONDS).execute(() -> {
      if (pending.stream.forget(pending.id)) {
        pending.answer.completeExceptionally(deadlineExceeded(timeout));
      }
    });
    return pending.answer
        .handle((response, failure) -> failure == null
            ? CompletableFuture.completedFuture(response)
            : failure instanceof Refused
                ? unaryAsync(request, left(deadline))
                : CompletableFuture.<CheckResponse>failedFuture(failure))
        .thenCompose(answer -> answer);
  }

  /** How many checks wait for the stream's answer now (for tests and diagnostics). */
  int inProgress() {
    synchronized (lock) {
      return stream == null ? 0 : stream.waiting();
    }
  }

  /**
   * Ends the stream (the checks in progress fail CANCELLED, as unary calls on a closed
   * channel); a later check opens another (or fails as a unary call would, on a closed channel).
   */
  void close() {
    Stream ending;
    synchronized (lock) {
      ending = stream;
      stream = null;
    }
    if (ending != null) {
      ending.cancel();
    }
  }

  /** The check sent over the stream (opened now if there is none, or it ended); null: go unary. */
  private Pending send(CheckRequest request) {
    Pending pending = null;
    synchronized (lock) {
      if (unary && (unaryForGood || System.nanoTime() - unaryUntil < 0)) {
        return null;
      }
      unary = false;
      for (int attempt = 0; attempt < 2 && pending == null; attempt++) { // it may end between look and send
        if (stream == null || stream.ended()) {
          stream = new Stream();
        }
        pending = stream.enqueue(request);
        if (pending == null && stream.full()) {
          return null;
        }
      }
    }
    if (pending != null) {
      pending.stream.drain(); // outside the lock: gRPC may call back into the stream as it writes
    }
    return pending;
  }

  private void refused(PatternsException refusal) {
    synchronized (lock) {
      unary = true;
      unaryForGood = refusal.code() == Status.Code.UNIMPLEMENTED;
      unaryUntil = System.nanoTime() + refusal.retryAfter().orElse(REFUSED_FOR).toNanos();
    }
  }

  private CheckResponse failed(CheckRequest request, long deadline, Throwable failure) {
    if (failure instanceof Refused) {
      return unary(request, left(deadline)); // nothing was decided: as a unary Check, in the time left
    }
    // A new exception, with this thread's stack, for each caller of a failure they may share.
    PatternsException error = PatternsException.from(failure);
    throw new PatternsException(error.code(), error.message(), error.reason(), error.fieldViolations(),
        error.retryAfter().orElse(null), error);
  }

  private CheckResponse unary(CheckRequest request, Duration within) {
    return Calls.unary(blocking, within, s -> s.check(request));
  }

  private CompletableFuture<CheckResponse> unaryAsync(CheckRequest request, Duration within) {
    return Calls.future(async, within, (s, o) -> s.check(request, o));
  }

  private static Duration left(long deadline) {
    return Duration.ofNanos(Math.max(deadline - System.nanoTime(), 0));
  }

  /** What a check not answered within its timeout throws: as a unary call's deadline. */
  private static PatternsException deadlineExceeded(Duration timeout) {
    return new PatternsException(Status.Code.DEADLINE_EXCEEDED,
        "deadline exceeded after " + timeout.toMillis() + " ms (no answer on the check stream)");
  }

  /**
   * The PatternsException of one check's error on the stream (a CheckError: the status a
   * unary Check would have ended with, flattened): the same code, reason, field violation
   * and retry-after as that unary failure's.
   */
  static PatternsException fromCheckError(CheckError error) {
    Status.Code code = Status.fromCodeValue(error.getCode()).getCode();
    String field = error.getField();
    List<ErrorDetails.FieldViolation> violations = List.of();
    if (!field.isEmpty()) {
      // The message is "<field>: <description>"; BadRequest carries the description alone.
      String message = error.getMessage();
      String prefix = field + ": ";
      String description = message.startsWith(prefix) ? message.substring(prefix.length()) : message;
      violations = List.of(new ErrorDetails.FieldViolation(field, description));
    }
    Duration retryAfter = error.hasRetryAfter() ? Convert.duration(error.getRetryAfter()) : null;
    return new PatternsException(code, error.getMessage(), error.getReason(), violations, retryAfter, null);
  }

  /** A check sent: its stream, its id, the future of its answer. */
  private record Pending(Stream stream, long id, CompletableFuture<CheckResponse> answer) {}

  /** The failure of the checks of a stream refused before it began: they were not decided. */
  private static final class Refused extends RuntimeException {
    private static final long serialVersionUID = 1L;
    final transient PatternsException error;

    Refused(PatternsException error) {
      super(error.getMessage(), null, false, false);
      this.error = error;
    }
  }

  /** One CheckStream call and the checks waiting for its answers. */
  private final class Stream implements ClientResponseObserver<CheckStreamRequest, CheckStreamResponse> {
    private final Map<Long, CompletableFuture<CheckResponse>> waiting = new HashMap<>(); // guarded by this
    private final ArrayDeque<CheckStreamRequest> outgoing = new ArrayDeque<>(); // guarded by this
    private boolean ended; // guarded by this
    private volatile boolean answered;
    // Writes (and the cancel) one at a time; taken before `this`, never inside it.
    private final Object writing = new Object();
    private boolean cancelled; // guarded by writing
    private ClientCallStreamObserver<CheckStreamRequest> call;

    Stream() {
      async.checkStream(this); // calls beforeStart (sets call) before it returns
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<CheckStreamRequest> requests) {
      this.call = requests;
      requests.setOnReadyHandler(this::drain);
    }

    /** Registers and queues the check; null when the stream has ended or is full. */
    synchronized Pending enqueue(CheckRequest request) {
      if (ended || full()) {
        return null;
      }
      long id = ids.incrementAndGet();
      CompletableFuture<CheckResponse> answer = new CompletableFuture<>();
      waiting.put(id, answer);
      outgoing.add(CheckStreamRequest.newBuilder().setId(id).setCheck(request).build());
      return new Pending(this, id, answer);
    }

    /** Writes the queued requests while the call takes them; a check that gave up is left out. */
    void drain() {
      synchronized (writing) {
        while (!cancelled && call.isReady()) {
          CheckStreamRequest next;
          synchronized (this) {
            do {
              next = outgoing.poll();
            } while (next != null && !waiting.containsKey(next.getId()));
          }
          if (next == null) {
            return;
          }
          call.onNext(next);
        }
      }
    }

    /** Stops waiting for check {@code id}: true when it was unanswered (a late answer is dropped). */
    synchronized boolean forget(long id) {
      return waiting.remove(id) != null;
    }

    synchronized boolean full() {
      return Math.max(waiting.size(), outgoing.size()) >= MAX_IN_PROGRESS;
    }

    synchronized boolean ended() {
      return ended;
    }

    synchronized int waiting() {
      return waiting.size();
    }

    void cancel() {
      synchronized (writing) {
        cancelled = true;
        call.cancel("the client closed", null);
      }
    }

    @Override
    public void onNext(CheckStreamResponse response) {
      answered = true;
      CompletableFuture<CheckResponse> answer;
      synchronized (this) {
        answer = waiting.remove(response.getId());
      }
      if (answer == null) {
        return; // it gave up: its late answer is dropped
      }
      if (response.hasResult()) {
        answer.complete(response.getResult());
      } else {
        answer.completeExceptionally(fromCheckError(response.getError()));
      }
    }

    @Override
    public void onError(Throwable error) {
      PatternsException failure = PatternsException.from(error);
      if (!answered && REFUSALS.contains(failure.code())) {
        refused(failure); // before a check can open the next stream
        end(new Refused(failure));
      } else {
        end(failure);
      }
    }

    @Override
    public void onCompleted() {
      // The server ends a stream OK only once the client stopped sending.
      end(new PatternsException(Status.Code.UNAVAILABLE, "the check stream ended before answering"));
    }

    private void end(RuntimeException failure) {
      List<CompletableFuture<CheckResponse>> left;
      synchronized (this) {
        ended = true;
        left = new ArrayList<>(waiting.values());
        waiting.clear();
        outgoing.clear();
      }
      for (CompletableFuture<CheckResponse> answer : left) {
        answer.completeExceptionally(failure);
      }
    }
  }
}
