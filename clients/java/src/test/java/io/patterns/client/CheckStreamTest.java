package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ServerCalls;
import io.patterns.ratelimit.v1.RateLimiterGrpc;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/**
 * Checks over the client's one shared CheckStream (the default), against the live server of
 * PATTERNS_TARGET and its metrics (PATTERNS_METRICS_URL): the same decisions and errors as
 * unary Checks; 64 concurrent checks admitting exactly the limit over one stream, with no
 * unary Check; a cut connection failing the checks in progress, the next check opening a
 * new stream; a server without CheckStream answered by unary Checks; the option off.
 */
class CheckStreamTest {
  private static final int LIMIT = 10;
  private static final int CONCURRENT = 64;
  private static final Duration HOUR = Duration.ofHours(1);
  // Exact over any rolling hour: no window rolls over while a test runs.
  private static final Policy POLICY = Policy.slidingWindowLog(LIMIT, HOUR);
  private static final Duration PATIENT = Duration.ofSeconds(10); // a budget no busy machine exhausts
  private final String run = Live.run();

  private static PatternsClient client(String target) {
    return PatternsClient.builder(target).timeout(PATIENT).build();
  }

  /** CONCURRENT checks of {@code key} at once, from as many threads. */
  private static List<Decision> burst(PatternsClient client, String key) throws Exception {
    CyclicBarrier start = new CyclicBarrier(CONCURRENT);
    return all(CONCURRENT, () -> {
      start.await(10, TimeUnit.SECONDS);
      return client.rateLimit().check(key, POLICY);
    });
  }

  /** {@code count} runs of {@code task}, each on a thread of its own: their results, in order. */
  private static <T> List<T> all(int count, Callable<T> task) throws Exception {
    ExecutorService threads = Executors.newFixedThreadPool(count);
    try {
      List<Future<T>> futures = new ArrayList<>();
      for (int i = 0; i < count; i++) {
        futures.add(threads.submit(task));
      }
      List<T> results = new ArrayList<>();
      for (Future<T> future : futures) {
        results.add(future.get(60, TimeUnit.SECONDS));
      }
      return results;
    } finally {
      threads.shutdownNow();
    }
  }

  private static void assertExactlyTheLimit(List<Decision> decisions) {
    assertEquals(CONCURRENT, decisions.size());
    assertFalse(decisions.stream().anyMatch(Decision::fallback), "no check fell back");
    assertEquals(LIMIT, decisions.stream().filter(Decision::allowed).count());
    assertEquals(IntStream.range(0, LIMIT).boxed().toList(),
        decisions.stream().filter(Decision::allowed).map(d -> (int) d.remaining()).sorted().toList());
  }

  @Test
  void concurrentChecksOverOneStreamAdmitExactlyTheLimit() throws Exception {
    double unary = Metrics.unaryChecks();
    double opened = Metrics.checkStreamsOpened();
    PatternsClient client = client(Live.target());
    try {
      assertExactlyTheLimit(burst(client, "one:" + run));
      assertEquals(opened + 1, Metrics.checkStreamsOpened(), "one CheckStream for all the checks");
      assertTrue(Metrics.checkStreamsOpen() >= 1);
    } finally {
      client.close();
    }
    assertEquals(unary, Metrics.unaryChecks(), "no unary Check");
    // After close(), a check fails as a unary call on the closed channel does.
    PatternsException closed = assertThrows(PatternsException.class, () -> client.rateLimit().check("one:" + run, POLICY));
    assertEquals(Status.Code.UNAVAILABLE, closed.code());
  }

  /** What must agree between two checks of the same history on different keys. */
  private static List<Object> same(Decision d) {
    return List.of(d.allowed(), d.limit(), d.remaining(), d.retryAfter().compareTo(Duration.ZERO) > 0, d.fallback());
  }

  private static List<Object> errorOf(PatternsException e) {
    return List.of(e.code(), e.reason(), e.message(), e.fieldViolations(), e.retryAfter());
  }

  /** The decisions of a history per policy, then the errors of bad checks, from {@code client}. */
  private static List<List<Object>> history(PatternsClient client, String prefix) {
    // The algorithms whose answers do not depend on where a window boundary falls.
    List<Policy> policies = List.of(Policy.slidingWindowLog(3, HOUR), Policy.tokenBucket(3, HOUR, 4),
        Policy.gcra(3, HOUR, 4));
    int[][] steps = {{1, 0}, {1, 1}, {2, 0}, {1, 0}, {1, 0}}; // cost, peek
    List<List<Object>> answers = new ArrayList<>();
    for (int n = 0; n < policies.size(); n++) {
      for (int[] step : steps) {
        CheckOptions options = CheckOptions.defaults().cost(step[0]).peek(step[1] == 1);
        answers.add(same(client.rateLimit().check(prefix + n, policies.get(n), options)));
      }
    }
    List<Policy> bad = List.of(POLICY, Policy.fixedWindow(0, HOUR), Policy.gcra(3, Duration.ZERO));
    List<String> keys = List.of("", "k", "k");
    for (int n = 0; n < bad.size(); n++) {
      int i = n;
      PatternsException e = assertThrows(PatternsException.class, () -> client.rateLimit()
          .check(keys.get(i), bad.get(i), CheckOptions.failOpen().fallbackAfter(PATIENT)));
      answers.add(errorOf(e));
    }
    return answers;
  }

  @Test
  void theStreamAnswersAsUnaryChecksDo() {
    List<List<Object>> expected;
    try (PatternsClient unary = PatternsClient.builder(Live.target()).timeout(PATIENT).streamChecks(false).build()) {
      expected = history(unary, "unary:" + run + ":");
    }
    double opened = Metrics.checkStreamsOpened();
    try (PatternsClient client = client(Live.target())) {
      List<List<Object>> got = history(client, "stream:" + run + ":");
      assertEquals(expected, got);
      assertEquals(Status.Code.INVALID_ARGUMENT, got.get(got.size() - 1).get(0));
      assertEquals("policy.period",
          ((List<?>) got.get(got.size() - 1).get(3)).stream().map(v -> ((ErrorDetails.FieldViolation) v).field())
              .findFirst().orElseThrow());
      assertEquals(opened + 1, Metrics.checkStreamsOpened(), "every check went over the one stream");
      // The async form over the same stream.
      Decision async = client.rateLimit().checkAsync("async:" + run, POLICY, CheckOptions.defaults()).join();
      assertTrue(async.allowed() && !async.fallback());
      assertEquals(LIMIT - 1, async.remaining());
      assertEquals(opened + 1, Metrics.checkStreamsOpened());
    }
  }

  @Test
  void aCutConnectionFailsTheChecksInProgressAndTheNextOpensANewStream() throws Exception {
    double opened = Metrics.checkStreamsOpened();
    try (CuttableProxy proxy = new CuttableProxy(Live.target()); PatternsClient client = client(proxy.target())) {
      assertTrue(client.rateLimit().check("before:" + run, POLICY).allowed());
      proxy.hold();
      // Half raise, half fail open within a budget longer than the test: the cut decides.
      ExecutorService threads = Executors.newFixedThreadPool(10);
      List<Future<Decision>> raising = new ArrayList<>();
      List<Future<Decision>> open = new ArrayList<>();
      try {
        for (int i = 0; i < 5; i++) {
          raising.add(threads.submit(() -> client.rateLimit().check("held:" + run, POLICY)));
          open.add(threads.submit(() -> client.rateLimit().check("held:" + run, POLICY,
              CheckOptions.failOpen().fallbackAfter(PATIENT))));
        }
        CheckStream stream = client.rateLimit().checkStream();
        Metrics.eventually(() -> stream.inProgress() == 10, PATIENT, "10 checks in progress on the stream");
        proxy.cut();
        for (Future<Decision> check : raising) {
          ExecutionException failed = assertThrows(ExecutionException.class, () -> check.get(30, TimeUnit.SECONDS));
          assertEquals(Status.Code.UNAVAILABLE, assertInstanceOf(PatternsException.class, failed.getCause()).code());
        }
        for (Future<Decision> check : open) {
          Decision decision = check.get(30, TimeUnit.SECONDS);
          assertTrue(decision.allowed() && decision.fallback());
        }
      } finally {
        threads.shutdownNow();
      }
      // The channel connects again through the relay; the next checks open one new stream.
      Metrics.eventually(() -> !client.rateLimit().check("probe:" + run, POLICY, OnUnavailable.ALLOW).fallback(),
          Duration.ofSeconds(30), "a check answered after the cut");
      assertExactlyTheLimit(burst(client, "after:" + run));
      assertEquals(opened + 2, Metrics.checkStreamsOpened(), "the cut stream and one new one");
    }
  }

  @Test
  void lateAnswersAreDroppedAndTheStreamGoesOn() throws Exception {
    double opened = Metrics.checkStreamsOpened();
    Policy fresh = Policy.slidingWindowLog(5, HOUR);
    try (CuttableProxy proxy = new CuttableProxy(Live.target()); PatternsClient client = client(proxy.target())) {
      assertTrue(client.rateLimit().check("warm:" + run, POLICY).allowed()); // the stream is open
      proxy.hold();
      List<Decision> stale = new ArrayList<>();
      try {
        for (int n = 0; n < 5; n++) {
          stale.add(client.rateLimit().check("stale:" + run + ":" + n, POLICY,
              CheckOptions.failClosed().fallbackAfter(Duration.ofMillis(300))));
        }
      } finally {
        proxy.release(); // the held checks reach the server, and their answers the client
      }
      assertTrue(stale.stream().allMatch(d -> d.fallback() && !d.allowed()));
      assertEquals(0, client.rateLimit().checkStream().inProgress());
      // Each fresh key checked once: its own answer has 4 left; a stale answer would not.
      for (int n = 0; n < 20; n++) {
        Decision decision = client.rateLimit().check("fresh:" + run + ":" + n, fresh);
        assertEquals(List.of(true, 4L, false), List.of(decision.allowed(), decision.remaining(), decision.fallback()));
      }
      assertEquals(opened + 1, Metrics.checkStreamsOpened(), "the one stream, which the hold did not end");
    }
  }

  /**
   * A gRPC server of its own on a real socket, serving RateLimiter.Check only (forwarded to
   * the live server), as a server older than CheckStream: it answers CheckStream UNIMPLEMENTED.
   */
  private static Server withoutCheckStream(ManagedChannel live) throws IOException {
    RateLimiterGrpc.RateLimiterBlockingStub forward = RateLimiterGrpc.newBlockingStub(live);
    ServerServiceDefinition checkOnly = ServerServiceDefinition.builder(Metrics.RATE_LIMITER)
        .addMethod(RateLimiterGrpc.getCheckMethod(), ServerCalls.asyncUnaryCall((request, response) -> {
          try {
            response.onNext(forward.withDeadlineAfter(10, TimeUnit.SECONDS).check(request));
            response.onCompleted();
          } catch (StatusRuntimeException e) {
            response.onError(e);
          }
        }))
        .build();
    return Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create()).addService(checkOnly).build().start();
  }

  @Test
  void aServerWithoutCheckStreamIsAnsweredByUnaryChecks() throws Exception {
    ManagedChannel live = Grpc.newChannelBuilder(Live.target(), InsecureChannelCredentials.create()).build();
    Server old = withoutCheckStream(live);
    try (PatternsClient client = client("127.0.0.1:" + old.getPort())) {
      double unary = Metrics.unaryChecks();
      assertExactlyTheLimit(burst(client, "old:" + run)); // the refused stream's checks too, each once
      Decision later = client.rateLimit().check("old-later:" + run, POLICY);
      assertTrue(later.allowed() && !later.fallback());
      assertEquals(0, client.rateLimit().checkStream().inProgress());
      Metrics.eventually(() -> Metrics.unaryChecks() == unary + CONCURRENT + 1, PATIENT,
          "every check decided once, by a unary Check");
    } finally {
      old.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
      live.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void withTheOptionOffChecksAreUnary() {
    double unary = Metrics.unaryChecks();
    double opened = Metrics.checkStreamsOpened();
    try (PatternsClient client = PatternsClient.builder(Live.target()).timeout(PATIENT).streamChecks(false).build()) {
      for (int i = 0; i < 5; i++) {
        assertTrue(client.rateLimit().check("off:" + run, POLICY).allowed());
      }
      assertTrue(client.rateLimit().checkAsync("off:" + run, POLICY, CheckOptions.defaults()).join().allowed());
      Metrics.eventually(() -> Metrics.unaryChecks() == unary + 6, PATIENT, "6 unary Checks");
      assertEquals(opened, Metrics.checkStreamsOpened(), "no CheckStream");
    }
  }

  @Test
  void closeEndsTheStreamOnAGivenChannelToo() throws InterruptedException {
    ManagedChannel channel = Grpc.newChannelBuilder(Live.target(), InsecureChannelCredentials.create()).build();
    try {
      // The earlier tests' streams ended: the one this client opens is the only one.
      Metrics.eventually(() -> Metrics.checkStreamsOpen() == 0, PATIENT, "no CheckStream open");
      double opened = Metrics.checkStreamsOpened();
      PatternsClient client = PatternsClient.builder(channel).timeout(PATIENT).build();
      assertTrue(client.rateLimit().check("given:" + run, POLICY).allowed());
      assertEquals(opened + 1, Metrics.checkStreamsOpened());
      assertNotNull(client.rateLimit().checkStream());
      assertEquals(1, Metrics.checkStreamsOpen());
      client.close();
      Metrics.eventually(() -> Metrics.checkStreamsOpen() == 0, PATIENT, "the stream ended with close()");
      assertFalse(channel.isShutdown()); // the client leaves a channel it was given open
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
