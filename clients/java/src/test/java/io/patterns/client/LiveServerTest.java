package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.patterns.leaderboard.v1.Mode;
import io.patterns.lock.v1.ReleaseStatus;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Every service and recipe against the live server of PATTERNS_TARGET (fails when unset). */
class LiveServerTest {
  private static PatternsClient client;
  private final String run = Live.run();

  @BeforeAll
  static void connect() {
    client = PatternsClient.builder(Live.target()).build();
  }

  @AfterAll
  static void close() {
    if (client != null) {
      client.close();
    }
  }

  private static byte[] bytes(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }

  @Test
  void rateLimitChecksRefusesAndResets() {
    Policy policy = Policy.gcra(3, Duration.ofSeconds(60));
    for (int i = 0; i < 3; i++) {
      assertTrue(client.rateLimit().check("user:" + run, policy).allowed());
    }
    Decision refused = client.rateLimit().check("user:" + run, policy);
    assertFalse(refused.allowed());
    assertFalse(refused.fallback());
    assertTrue(refused.retryAfter().compareTo(Duration.ZERO) > 0);
    client.rateLimit().reset("user:" + run, policy);
    assertTrue(client.rateLimit().check("user:" + run, policy).allowed());

    RateLimiter.CheckManyResult many = client.rateLimit().checkMany(List.of(
        Map.entry("api:" + run, policy), Map.entry("api:" + run, Policy.fixedWindow(1, Duration.ofDays(1)))), true);
    assertTrue(many.allowed());
    assertEquals(2, many.decisions().size());
  }

  @Test
  void anAsyncCheckAnswersAsTheBlockingOne() {
    Policy policy = Policy.gcra(1, Duration.ofSeconds(60));
    assertTrue(client.rateLimit().checkAsync("async:" + run, policy, CheckOptions.failClosed()).join().allowed());
    Decision refused = client.rateLimit().checkAsync("async:" + run, policy, CheckOptions.defaults()).join();
    assertFalse(refused.allowed());
    assertFalse(refused.fallback());
    // An error no fallback covers fails the future whatever the options say.
    java.util.concurrent.CompletionException e = assertThrows(java.util.concurrent.CompletionException.class,
        () -> client.rateLimit().checkAsync("", policy, CheckOptions.failOpen()).join());
    assertEquals(Status.Code.INVALID_ARGUMENT, assertInstanceOf(PatternsException.class, e.getCause()).code());
  }

  @Test
  void aRefusedRequestCarriesItsDetails() {
    PatternsException e = assertThrows(PatternsException.class,
        () -> client.rateLimit().check("", Policy.gcra(3, Duration.ofSeconds(60))));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertEquals("key", e.fieldViolations().get(0).field());
    assertEquals("INVALID_ARGUMENT", e.reason());
  }

  @Test
  void aDeadlinePerServiceOverridesTheClients() {
    PatternsException e = assertThrows(PatternsException.class,
        () -> client.locks().withTimeout(Duration.ofNanos(1)).inspect("lock:" + run));
    assertEquals(Status.Code.DEADLINE_EXCEEDED, e.code());
  }

  @Test
  void anApiKeyIsNotSentOverAPlaintextChannel() throws InterruptedException {
    ManagedChannel plain = Grpc.newChannelBuilder(Live.target(), InsecureChannelCredentials.create()).build();
    try (PatternsClient keyed = PatternsClient.builder(plain).apiKey("not-for-plaintext").build()) {
      PatternsException e = assertThrows(PatternsException.class, () -> keyed.counter().count("k:" + run));
      assertEquals(Status.Code.UNAUTHENTICATED, e.code());
      assertTrue(e.message().contains("only over TLS"), e.message());
    } finally {
      // The client leaves a channel it was given open.
      assertFalse(plain.isShutdown());
      plain.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void counterCountsDistinctItems() {
    assertTrue(client.counter().add("a:" + run, "x", "y", "x"));
    client.counter().add("b:" + run, List.of("z"), Duration.ofMinutes(5));
    assertEquals(2, client.counter().count("a:" + run));
    assertEquals(3, client.counter().merge("c:" + run, List.of("a:" + run, "b:" + run), null));
  }

  @Test
  void leaderboardRanks() {
    String board = "board:" + run;
    client.leaderboard().submit(board, "ann", 10);
    client.leaderboard().submit(board, "bob", 5);
    client.leaderboard().submit(Leaderboard.Board.of(board), "bob", 7, Mode.MODE_INCREMENT);
    Leaderboard.Page top = client.leaderboard().top(board, 10);
    assertEquals(List.of(new Leaderboard.Standing("bob", 12, 1), new Leaderboard.Standing("ann", 10, 2)),
        top.standings());
    assertEquals(2, top.total());
    assertEquals(2, client.leaderboard().rank(board, "ann").orElseThrow().rank());
    assertTrue(client.leaderboard().rank(board, "cat").isEmpty());
    assertEquals(2, client.leaderboard().around(board, "ann", 1).size());
    assertEquals(1, client.leaderboard().remove(board, "ann", "cat"));
    assertEquals(1, client.leaderboard().size(board));
  }

  @Test
  void sessionsLiveAndEnd() {
    String user = "user:" + run;
    Sessions.Session session = client.sessions().create(user, Duration.ofMinutes(5), Map.of("agent", "java"), 0);
    assertEquals("java", client.sessions().get(session.id(), true).orElseThrow().attributes().get("agent"));
    Sessions.Session updated = client.sessions().update(session.id(), Map.of("theme", "dark"), List.of("agent"));
    assertEquals(Map.of("theme", "dark"), updated.attributes());
    Sessions.Session rotated = client.sessions().rotate(session.id());
    assertTrue(client.sessions().get(session.id()).isEmpty());
    assertEquals(1, client.sessions().list(user, 0, "").total());
    client.sessions().create(user, Duration.ofMinutes(5));
    assertEquals(1, client.sessions().destroyAll(user, rotated.id()));
    assertTrue(client.sessions().destroy(rotated.id()));
    assertFalse(client.sessions().destroy(rotated.id()));
  }

  @Test
  void cacheStoresAndInvalidates() {
    assertTrue(client.cache().set("page:" + run, bytes("<html>"), Duration.ofMinutes(1)));
    assertEquals("<html>", client.cache().get("page:" + run).orElseThrow().text());
    assertTrue(client.cache().get("none:" + run).isEmpty());
    List<java.util.Optional<Cache.Entry>> many = client.cache().getMany(List.of("page:" + run, "none:" + run));
    assertTrue(many.get(0).isPresent() && many.get(1).isEmpty());
    assertEquals(1, client.cache().invalidatePrefix("page:" + run));
    assertEquals(0, client.cache().delete("page:" + run));
  }

  @Test
  void getOrComputeComputesOnceThenHits() {
    AtomicInteger computed = new AtomicInteger();
    for (int i = 0; i < 2; i++) {
      byte[] value = client.cache().getOrCompute("fill:" + run, () -> {
        computed.incrementAndGet();
        return bytes("v1");
      }, FillOptions.defaults().ttl(Duration.ofMinutes(1)).tags("t:" + run));
      assertArrayEquals(bytes("v1"), value);
    }
    assertEquals(1, computed.get());
    assertEquals(1, client.cache().invalidateTags("t:" + run));
  }

  @Test
  void aFailedComputeGivesItsLeaseBack() {
    RuntimeException broken = new IllegalStateException("the source is down");
    RuntimeException thrown = assertThrows(RuntimeException.class,
        () -> client.cache().getOrCompute("failing:" + run, () -> {
          throw broken;
        }));
    assertSame(broken, thrown);
    // Were the lease still held, this would wait for it (up to 20 s), then compute unstored.
    long started = System.nanoTime();
    byte[] value = client.cache().getOrCompute("failing:" + run, () -> bytes("v2"),
        FillOptions.defaults().waitFor(Duration.ofSeconds(20)));
    assertArrayEquals(bytes("v2"), value);
    assertTrue(System.nanoTime() - started < TimeUnit.SECONDS.toNanos(10));
    assertEquals("v2", client.cache().get("failing:" + run).orElseThrow().text());
  }

  @Test
  void aMissIsCachedOnlyWhenAsked() {
    assertNull(client.cache().getOrCompute("missing:" + run, () -> null));
    assertTrue(client.cache().get("missing:" + run).isEmpty());
    FillOptions misses = FillOptions.defaults().cacheMissesFor(Duration.ofMinutes(1));
    assertNull(client.cache().getOrCompute("missing:" + run, () -> null, misses));
    assertNull(client.cache().getOrCompute("missing:" + run, () -> bytes("unused"), misses));
    assertArrayEquals(Cache.MISSING, client.cache().get("missing:" + run).orElseThrow().value());
  }

  @Test
  void leasesAreGrantedExtendedAndReleased() {
    String name = "lease:" + run;
    Locks.Lease lease = client.locks().acquire(name, Duration.ofSeconds(10)).orElseThrow();
    assertTrue(client.locks().acquire(name, Duration.ofSeconds(10)).isEmpty());
    assertTrue(client.locks().extend(lease, Duration.ofSeconds(20)).isPresent());
    assertEquals(lease.fencingToken(), client.locks().inspect(name).fencingToken());
    assertEquals(ReleaseStatus.RELEASE_STATUS_RELEASED, client.locks().release(lease));
    assertFalse(client.locks().inspect(name).held());
  }

  @Test
  void aHeldLockIsReleasedWhenTheBlockEnds() throws InterruptedException {
    String name = "held:" + run;
    try (HeldLock held = client.locks().hold(name, Duration.ofSeconds(5))) {
      assertTrue(held.fencingToken() > 0);
      assertTrue(client.locks().inspect(name).held());
      assertThrows(LockNotAcquiredException.class, () -> client.locks().hold(name, Duration.ofSeconds(5)));
      assertFalse(held.isLost());
    }
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while (client.locks().inspect(name).held()) {
      assertTrue(System.nanoTime() < deadline, "the lock was not released");
      Thread.sleep(20);
    }
  }

  @Test
  void aForceReleasedLockReportsItsLoss() throws Exception {
    String name = "lost:" + run;
    try (HeldLock held = client.locks().hold(name, Duration.ofSeconds(5))) {
      assertTrue(client.locks().forceRelease(name));
      held.lost().get(15, TimeUnit.SECONDS);
      assertTrue(held.isLost());
      // The cause comes with the end of the stream, just after the loss.
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
      while (held.lossCause().isEmpty() && System.nanoTime() < deadline) {
        Thread.sleep(10);
      }
      assertEquals(Status.Code.ABORTED, held.lossCause().orElseThrow().code());
    } // leaving the block after a loss does not throw
  }

  @Test
  void aSubscriptionReceivesWhatIsPublishedAfterItIsConfirmed() {
    String channel = "events:" + run;
    try (Subscription subscription = client.events().subscribe(List.of(channel), List.of("glob:" + run + ":*"))) {
      subscription.awaitSubscribed(Duration.ofSeconds(10));
      assertTrue(subscription.isSubscribed());
      client.events().publish(channel, "one");
      client.events().publish("glob:" + run + ":x", bytes("two"));
      Events.Event first = assertInstanceOf(Events.Event.class, subscription.poll(Duration.ofSeconds(10)));
      assertEquals(channel, first.channel());
      assertEquals("one", first.text());
      Events.Event second = assertInstanceOf(Events.Event.class, subscription.poll(Duration.ofSeconds(10)));
      assertEquals("glob:" + run + ":*", second.pattern());
      assertEquals("two", second.text());
      assertNull(subscription.poll(Duration.ofMillis(50)));
      subscription.close();
      assertFalse(subscription.hasNext());
      assertNull(subscription.poll(Duration.ofSeconds(1)));
      assertThrows(PatternsException.class, () -> subscription.awaitSubscribed(Duration.ofSeconds(1)));
    }
  }

  @Test
  void aListenerGetsEveryEventUntilClosed() throws Exception {
    String channel = "listened:" + run;
    java.util.concurrent.BlockingQueue<String> heard = new java.util.concurrent.LinkedBlockingQueue<>();
    Subscription subscription = client.events().subscribe(channel);
    java.util.concurrent.CompletableFuture<Void> ended = subscription.listen(
        item -> heard.add(((Events.Event) item).text()));
    subscription.awaitSubscribed(Duration.ofSeconds(10));
    client.events().publish(channel, "a");
    client.events().publish(channel, "b");
    assertEquals("a", heard.poll(10, TimeUnit.SECONDS));
    assertEquals("b", heard.poll(10, TimeUnit.SECONDS));
    subscription.close();
    ended.get(10, TimeUnit.SECONDS); // completes normally once closed
  }
}
