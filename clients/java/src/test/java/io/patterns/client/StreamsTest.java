package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The Streams service and its consumer, against the live server (fresh stream names per run). */
class StreamsTest {
  private static final Duration WAIT = Duration.ofSeconds(10);
  private static PatternsClient client;

  @BeforeAll
  static void connect() {
    client = PatternsClient.builder(Live.target()).build();
  }

  @AfterAll
  static void disconnect() {
    client.close();
  }

  private static Set<String> appendNumbered(String stream, int count) {
    Set<String> ids = new TreeSet<>();
    for (int i = 0; i < count; i++) {
      ids.add(client.streams().append(stream, "entry " + i).id());
    }
    assertEquals(count, ids.size());
    return ids;
  }

  @Test
  void twoConsumersOfAGroupShareTheEntriesAndEachGroupGetsThemAll() throws Exception {
    String stream = "orders:" + Live.run();
    Set<String> appended = appendNumbered(stream, 200);
    Streams.ConsumeOptions options = Streams.ConsumeOptions.defaults().earliest().maxInFlight(20);
    Map<String, AtomicInteger> handled = new ConcurrentHashMap<>();
    Map<String, AtomicInteger> audited = new ConcurrentHashMap<>();
    AtomicInteger total = new AtomicInteger();
    ExecutorService pool = Executors.newFixedThreadPool(3);
    try (StreamConsumer first = client.streams().consume(stream, "billing", "a", options);
        StreamConsumer second = client.streams().consume(stream, "billing", "b", options);
        StreamConsumer audit = client.streams().consume(stream, "audit", "a", options)) {
      List<Future<Integer>> readers = new ArrayList<>();
      for (StreamConsumer consumer : List.of(first, second)) {
        readers.add(pool.submit(() -> drain(consumer, handled, () -> total.get() >= 200, total)));
      }
      Future<Integer> auditor = pool.submit(() -> drain(audit, audited, () -> audited.size() >= 200, new AtomicInteger()));
      int byFirst = readers.get(0).get(30, TimeUnit.SECONDS);
      int bySecond = readers.get(1).get(30, TimeUnit.SECONDS);
      assertEquals(200, auditor.get(30, TimeUnit.SECONDS));
      assertEquals(200, byFirst + bySecond);
      // Nothing more comes: every entry was acknowledged once.
      assertNull(first.poll(Duration.ofMillis(300)));
      assertNull(second.poll(Duration.ofMillis(300)));
    } finally {
      pool.shutdownNow();
    }
    assertEquals(appended, handled.keySet());
    assertEquals(appended, audited.keySet());
    assertTrue(handled.values().stream().allMatch(n -> n.get() == 1), "each entry handled exactly once");
    assertTrue(audited.values().stream().allMatch(n -> n.get() == 1), "each entry audited exactly once");
    // The acks reached the server: nothing pending in either group.
    pollUntil(() -> client.streams().info(stream).groups().stream().allMatch(g -> g.pending() == 0));
  }

  /** Handle and ack messages until {@code done}; how many this consumer handled. */
  private static int drain(StreamConsumer consumer, Map<String, AtomicInteger> counts,
      java.util.function.BooleanSupplier done, AtomicInteger total) {
    int mine = 0;
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(25);
    while (!done.getAsBoolean() && System.nanoTime() < deadline) {
      Streams.Message message = consumer.poll(Duration.ofMillis(100));
      if (message == null) {
        continue;
      }
      assertEquals(1, message.deliveryCount());
      counts.computeIfAbsent(message.id(), id -> new AtomicInteger()).incrementAndGet();
      message.ack();
      total.incrementAndGet();
      mine++;
    }
    return mine;
  }

  @Test
  void anUnackedMessageComesBackWithDeliveryCountTwo() {
    String stream = "unacked:" + Live.run();
    Streams.ConsumeOptions options = Streams.ConsumeOptions.defaults().ackTimeout(Duration.ofMillis(200));
    try (StreamConsumer consumer = client.streams().consume(stream, "g", "c", options)) {
      consumer.awaitSubscribed(WAIT);
      String id = client.streams().append(stream, "once").id();
      Streams.Message first = consumer.poll(WAIT);
      assertNotNull(first);
      assertEquals(id, first.id());
      assertEquals(1, first.deliveryCount());
      Streams.Message again = consumer.poll(WAIT); // not acked: redelivered after the ack timeout
      assertNotNull(again);
      assertEquals(id, again.id());
      assertEquals(2, again.deliveryCount());
      assertEquals("once", again.text());
      assertEquals(first.firstDeliveredAt(), again.firstDeliveredAt());
      again.ack();
      assertNull(consumer.poll(Duration.ofMillis(1500)));
    }
  }

  @Test
  void aNackWithDelayRedelivers() {
    String stream = "nacked:" + Live.run();
    try (StreamConsumer consumer = client.streams().consume(stream, "g", "c")) {
      consumer.awaitSubscribed(WAIT);
      String id = client.streams().append(stream, "retry me".getBytes(), Map.of("kind", "test"), null, null).id();
      Streams.Message first = consumer.poll(WAIT);
      assertNotNull(first);
      assertEquals(Map.of("kind", "test"), first.headers());
      first.nack(Duration.ofMillis(300));
      Streams.Message again = consumer.poll(WAIT);
      assertNotNull(again);
      assertEquals(id, again.id());
      assertEquals(2, again.deliveryCount());
      again.ack();
      // A delay beyond the ack timeout (30 s by default) is refused here, before it is sent.
      String other = client.streams().append(stream, "x").id();
      Streams.Message next = consumer.poll(WAIT);
      assertEquals(other, next.id());
      PatternsException refused = assertThrows(PatternsException.class, () -> next.nack(Duration.ofMinutes(1)));
      assertEquals(Status.Code.INVALID_ARGUMENT, refused.code());
      next.ack();
    }
  }

  @Test
  void anIdempotentAppendGivesOneEntry() {
    String stream = "idem:" + Live.run();
    Streams.Appended first = client.streams().append(stream, "a".getBytes(), Map.of(), "key-1", Duration.ofMinutes(1));
    Streams.Appended repeat = client.streams().append(stream, "b".getBytes(), Map.of(), "key-1", Duration.ofMinutes(1));
    assertFalse(first.duplicate());
    assertTrue(repeat.duplicate());
    assertEquals(first.id(), repeat.id());
    List<Streams.Entry> entries = client.streams().read(stream, 0);
    assertEquals(1, entries.size());
    assertEquals("a", entries.get(0).text());
  }

  @Test
  void readInfoTrimRetentionAndDeleteGroup() {
    String stream = "admin:" + Live.run();
    List<String> ids = new ArrayList<>(appendNumbered(stream, 10));
    List<Streams.Entry> page = client.streams().read(stream, "0", 4);
    assertEquals(ids.subList(0, 4), page.stream().map(Streams.Entry::id).toList());
    assertEquals(ids.subList(4, 8), client.streams().read(stream, page.get(3).id(), 4).stream().map(Streams.Entry::id).toList());
    try (StreamConsumer consumer = client.streams().consume(stream, "g", "c", Streams.ConsumeOptions.defaults().earliest())) {
      consumer.awaitSubscribed(WAIT);
    }
    Streams.StreamInfo info = client.streams().info(stream);
    assertTrue(info.exists());
    assertEquals(10, info.length());
    assertEquals(ids.get(0), info.firstId());
    assertEquals(ids.get(9), info.lastId());
    assertEquals(List.of("g"), info.groups().stream().map(Streams.GroupInfo::name).toList());
    // Approximate trimming may keep more than asked of a short stream: it never deletes what it need not.
    long deleted = client.streams().trim(stream, 5, null);
    assertTrue(deleted >= 0 && deleted <= 5, "deleted " + deleted);
    client.streams().setRetention(stream, 1000, Duration.ofDays(1));
    assertEquals(new Streams.Retention(1000, Duration.ofDays(1)), client.streams().info(stream).retention());
    assertTrue(client.streams().deleteGroup(stream, "g"));
    assertFalse(client.streams().deleteGroup(stream, "g"));
    assertFalse(client.streams().info("absent:" + Live.run()).exists());
    PatternsException bad = assertThrows(PatternsException.class, () -> client.streams().append("", "x"));
    assertEquals(Status.Code.INVALID_ARGUMENT, bad.code());
  }

  @Test
  void deletingTheGroupEndsItsConsumerWithAborted() {
    String stream = "deleted:" + Live.run();
    try (StreamConsumer consumer = client.streams().consume(stream, "g", "c")) {
      consumer.awaitSubscribed(WAIT);
      assertTrue(client.streams().deleteGroup(stream, "g"));
      // Not opened again: another attempt cannot cure it (the server ends it within about a second).
      PatternsException ended = assertThrows(PatternsException.class, () -> consumer.poll(WAIT));
      assertEquals(Status.Code.ABORTED, ended.code());
      assertEquals("GROUP_DELETED", ended.reason());
    }
  }

  @Test
  void closeEndsTheStreamAndAWaitingReader() throws Exception {
    String stream = "close:" + Live.run();
    StreamConsumer consumer = client.streams().consume(stream, "g", "c");
    consumer.awaitSubscribed(WAIT);
    CountDownLatch waiting = new CountDownLatch(1);
    ExecutorService pool = Executors.newSingleThreadExecutor();
    try {
      Future<Boolean> reader = pool.submit(() -> {
        waiting.countDown();
        return consumer.hasNext();
      });
      assertTrue(waiting.await(5, TimeUnit.SECONDS));
      consumer.close();
      assertFalse(reader.get(5, TimeUnit.SECONDS));
      assertFalse(consumer.isSubscribed());
      assertThrows(PatternsException.class, () -> consumer.awaitSubscribed(WAIT));
    } finally {
      pool.shutdownNow();
    }
  }

  @Test
  void aCutMidConsumeReopensAndTheUnackedEntriesComeBack() throws IOException {
    String stream = "cut:" + Live.run();
    Streams.ConsumeOptions options = Streams.ConsumeOptions.defaults().earliest().ackTimeout(Duration.ofMillis(500));
    Set<String> appended = appendNumbered(stream, 5);
    try (CuttableProxy proxy = new CuttableProxy(Live.target());
        PatternsClient relayed = PatternsClient.builder(proxy.target()).build();
        StreamConsumer consumer = relayed.streams().consume(stream, "g", "c", options)) {
      Map<String, Integer> counts = new HashMap<>();
      for (int i = 0; i < 5; i++) {
        Streams.Message message = consumer.poll(WAIT);
        assertNotNull(message);
        assertEquals(1, message.deliveryCount());
        counts.put(message.id(), message.deliveryCount());
      }
      assertEquals(appended, counts.keySet());
      proxy.cut(); // none was acked: all five come back on the stream opened again
      Map<String, Integer> again = new HashMap<>();
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
      while (again.size() < 5 && System.nanoTime() < deadline) {
        Streams.Message message = consumer.poll(Duration.ofSeconds(1));
        if (message != null) {
          again.put(message.id(), message.deliveryCount());
          message.ack();
        }
      }
      assertEquals(appended, again.keySet());
      assertTrue(again.values().stream().allMatch(n -> n >= 2), "redelivered: " + again);
    }
    pollUntil(() -> client.streams().info(stream).groups().get(0).pending() == 0);
  }

  private static void pollUntil(java.util.function.BooleanSupplier condition) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while (!condition.getAsBoolean()) {
      assertTrue(System.nanoTime() < deadline, "not within 10 s");
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new AssertionError(e);
      }
    }
  }
}
