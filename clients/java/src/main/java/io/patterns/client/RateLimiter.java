package io.patterns.client;

import io.grpc.stub.StreamObserver;
import io.patterns.ratelimit.v1.CheckManyRequest;
import io.patterns.ratelimit.v1.CheckManyResponse;
import io.patterns.ratelimit.v1.CheckRequest;
import io.patterns.ratelimit.v1.CheckResponse;
import io.patterns.ratelimit.v1.CheckStreamRequest;
import io.patterns.ratelimit.v1.CheckStreamResponse;
import io.patterns.ratelimit.v1.RateLimiterGrpc;
import io.patterns.ratelimit.v1.ResetRequest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * {@code client.rateLimit()}: checks against policies. By default ({@code streamChecks} on
 * the builder) {@code check} and {@code checkAsync} send their checks as messages of the
 * client's one shared CheckStream rather than a unary Check each: the same answers, for
 * less of the server's time.
 */
public final class RateLimiter {
  private final Calls calls;
  private final RateLimiterGrpc.RateLimiterBlockingStub stub;
  private final RateLimiterGrpc.RateLimiterStub async;
  private final CheckStream checkStream; // null: unary Checks

  RateLimiter(Calls calls, CheckStream checkStream) {
    this.calls = calls;
    this.stub = calls.prepare(RateLimiterGrpc.newBlockingStub(calls.channel));
    this.async = calls.prepare(RateLimiterGrpc.newStub(calls.channel));
    this.checkStream = checkStream;
  }

  /** This service with another deadline per call (its checks share the client's stream). */
  public RateLimiter withTimeout(Duration timeout) {
    return new RateLimiter(calls.withTimeout(timeout), checkStream);
  }

  /** The client's shared check stream; null when its checks are unary. */
  CheckStream checkStream() {
    return checkStream;
  }

  /** {@code request}'s answer within {@code within}, over the stream or unary. */
  private CheckResponse decide(CheckRequest request, Duration within) {
    if (checkStream != null) {
      return checkStream.check(request, within);
    }
    return Calls.unary(stub, within, s -> s.check(request));
  }

  /** Whether one unit for {@code key} is admitted under {@code policy} (consumed if so); failures throw. */
  public Decision check(String key, Policy policy) {
    return check(key, policy, CheckOptions.defaults());
  }

  /**
   * Whether one unit is admitted; when the server cannot answer within 200 ms, the answer is
   * {@code onUnavailable}'s ({@link Decision#fallback()} true): ALLOW fails open, DENY closed.
   */
  public Decision check(String key, Policy policy, OnUnavailable onUnavailable) {
    return check(key, policy, CheckOptions.defaults().onUnavailable(onUnavailable));
  }

  /**
   * Whether {@code options.cost()} units for {@code key} are admitted under {@code policy}.
   *
   * <p>With RAISE (the default) a failure throws, after the client's timeout at most. With
   * ALLOW or DENY the check waits {@code fallbackAfter} (200 ms) at most, and when the server
   * has not answered by then, or answered that it or its Redis is unavailable or that it is
   * overloaded ({@link PatternsException#fallsBack()}), the decision is the client's own
   * ({@code fallback} true): admitted, or refused for the error's retry-after (else 1 s).
   * Other errors (a wrong argument or API key) throw whatever onUnavailable says.
   */
  public Decision check(String key, Policy policy, CheckOptions options) {
    CheckRequest request = request(key, policy, options);
    if (options.onUnavailable() == OnUnavailable.RAISE) {
      return decision(decide(request, calls.timeout), policy);
    }
    try {
      return decision(decide(request, options.fallbackAfter()), policy);
    } catch (PatternsException error) {
      return fallback(policy, options, error);
    }
  }

  /**
   * {@link #check(String, Policy, CheckOptions)} without blocking a thread: the decision, the
   * fallback's included, or a failure with the PatternsException (for a non-blocking server).
   * It completes on a thread of gRPC's, which also delivers the stream's other answers:
   * keep what you chain on it short, or chain it with an {@code ...Async} method.
   */
  public CompletableFuture<Decision> checkAsync(String key, Policy policy, CheckOptions options) {
    CheckRequest request = request(key, policy, options);
    boolean raise = options.onUnavailable() == OnUnavailable.RAISE;
    Duration within = raise ? calls.timeout : options.fallbackAfter();
    CompletableFuture<CheckResponse> answer = checkStream != null
        ? checkStream.checkAsync(request, within)
        : Calls.future(async, within, (s, o) -> s.check(request, o));
    return answer.handle((response, failure) -> {
      if (failure == null) {
        return decision(response, policy);
      }
      PatternsException error = PatternsException.from(
          failure instanceof CompletionException ? failure.getCause() : failure);
      return fallback(policy, options, error); // throws it when no fallback applies
    });
  }

  /**
   * Several checks of cost 1 at once ({@code checks}: key to policy, in iteration order: a
   * LinkedHashMap or Map.of with one entry); with {@code allOrNothing} nothing is consumed
   * unless all are admitted.
   */
  public CheckManyResult checkMany(List<Map.Entry<String, Policy>> checks, boolean allOrNothing) {
    CheckManyRequest.Builder request = CheckManyRequest.newBuilder().setAllOrNothing(allOrNothing);
    for (Map.Entry<String, Policy> check : checks) {
      request.addChecks(CheckRequest.newBuilder()
          .setKey(check.getKey()).setPolicy(check.getValue().message()).setCost(1));
    }
    CheckManyResponse response = calls.unary(stub, s -> s.checkMany(request.build()));
    List<Decision> decisions = new ArrayList<>();
    for (int i = 0; i < response.getResultsCount(); i++) {
      decisions.add(decision(response.getResults(i), checks.get(i).getValue()));
    }
    return new CheckManyResult(response.getAllowed(), List.copyOf(decisions));
  }

  /** What checkMany answered: whether all were admitted, and each decision in order. */
  public record CheckManyResult(boolean allowed, List<Decision> decisions) {}

  /** Forget what {@code key} has consumed under {@code policy}. */
  public void reset(String key, Policy policy) {
    ResetRequest request = ResetRequest.newBuilder().setKey(key).setPolicy(policy.message()).build();
    calls.unary(stub, s -> s.reset(request));
  }

  /**
   * The raw CheckStream (many checks over one stream, answered by id), a call of its own
   * (not the stream that {@code check} shares), with the client's API key and no deadline: {@code responses} gets the answers; close what this returns
   * ({@code onCompleted}) to end it. Its failures reach {@code responses.onError} as
   * StatusRuntimeException ({@link PatternsException#from} decodes them).
   */
  public StreamObserver<CheckStreamRequest> checkStream(StreamObserver<CheckStreamResponse> responses) {
    return calls.prepare(RateLimiterGrpc.newStub(calls.channel)).checkStream(responses);
  }

  private static CheckRequest request(String key, Policy policy, CheckOptions options) {
    return CheckRequest.newBuilder()
        .setKey(Convert.required(key, "key"))
        .setPolicy(policy.message())
        .setCost(options.cost())
        .setPeek(options.peek())
        .build();
  }

  static Decision decision(CheckResponse response, Policy policy) {
    return new Decision(
        response.getAllowed(),
        response.getLimit(),
        response.getRemaining(),
        Convert.duration(response.getResetAfter()),
        Convert.duration(response.getRetryAfter()),
        false,
        policy);
  }

  /** The decision onUnavailable makes after {@code error}; the error itself when no fallback covers it. */
  static Decision fallback(Policy policy, CheckOptions options, PatternsException error) {
    if (options.onUnavailable() == OnUnavailable.RAISE || !error.fallsBack()) {
      throw error;
    }
    boolean allowed = options.onUnavailable() == OnUnavailable.ALLOW;
    long capacity = policy.capacity();
    Duration wait = allowed ? Duration.ZERO : error.retryAfter().orElse(Duration.ofSeconds(1));
    long remaining = allowed ? Math.max(capacity - options.cost(), 0) : 0;
    return new Decision(allowed, capacity, remaining, wait, wait, true, policy);
  }
}
