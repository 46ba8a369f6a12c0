package example;

import io.patterns.client.CheckOptions;
import io.patterns.client.Decision;
import io.patterns.client.Events;
import io.patterns.client.FillOptions;
import io.patterns.client.HeldLock;
import io.patterns.client.PatternsClient;
import io.patterns.client.PatternsException;
import io.patterns.client.Policy;
import io.patterns.client.Subscription;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Uses every recipe of the Java client against a live server, one line per step on stdout
 * (logs go to stderr). A line starting with "? " asks whoever runs it to do something to the
 * server (restart, pause, resume) and answer with a line on stdin. The connection comes from
 * PATTERNS_TARGET, PATTERNS_API_KEY, PATTERNS_CA_FILE, PATTERNS_CERT_FILE, PATTERNS_KEY_FILE.
 */
public final class Main {
  private static final BufferedReader DRIVER =
      new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));

  public static void main(String[] args) throws Exception {
    // A run id in every name: runs against one server never collide.
    byte[] random = new byte[6];
    new SecureRandom().nextBytes(random);
    String run = HexFormat.of().formatHex(random);

    // A generous deadline per call: the driver runs this on a busy machine.
    try (PatternsClient client = PatternsClient.fromEnv().timeout(Duration.ofSeconds(10)).build()) {
      // Rate limit: GCRA, 3 per 60 s, checked 4 times.
      Policy policy = Policy.gcra(3, Duration.ofSeconds(60));
      List<String> allowed = new ArrayList<>();
      Decision last = null;
      for (int i = 0; i < 4; i++) {
        last = client.rateLimit().check("user:" + run, policy);
        allowed.add(String.valueOf(last.allowed()));
      }
      say("ratelimit: " + String.join(" ", allowed) + " retry_after>0 " + !last.retryAfter().isZero());

      // A refused request, read through the client's error type.
      try {
        client.rateLimit().check("", policy);
        say("error: an empty key was accepted");
      } catch (PatternsException e) {
        say("error: " + e.code().name() + " " + e.fieldViolations().get(0).field() + " " + e.reason());
      }

      client.counter().add("visitors:" + run, "a", "b", "a");
      say("counter: " + client.counter().count("visitors:" + run));

      String board = "chess:" + run;
      client.leaderboard().submit(board, "ann", 10);
      client.leaderboard().submit(board, "bob", 5);
      var best = client.leaderboard().top(board, 10).standings().get(0);
      say("leaderboard: " + best.member() + " " + best.rank() + " " + client.leaderboard().size(board));

      var session = client.sessions().create("user:" + run, Duration.ofMinutes(5));
      boolean found = client.sessions().get(session.id()).isPresent();
      client.sessions().destroy(session.id());
      say("sessions: " + found + " " + client.sessions().get(session.id()).isPresent());

      // getOrCompute: computed once, then a hit. Values live a minute: nothing is left behind.
      FillOptions minute = FillOptions.defaults().ttl(Duration.ofMinutes(1));
      AtomicInteger computed = new AtomicInteger();
      byte[] value = null;
      for (int i = 0; i < 2; i++) {
        value = client.cache().getOrCompute("page:" + run, () -> {
          computed.incrementAndGet();
          return bytes("v1");
        }, minute);
      }
      say("cache: " + text(value) + " computed " + computed.get());

      // A compute that fails: its own error reaches the caller, and the lease is given back.
      RuntimeException broken = new IllegalStateException("the source is down");
      boolean same;
      try {
        client.cache().getOrCompute("report:" + run, () -> {
          throw broken;
        }, minute);
        same = false;
      } catch (RuntimeException e) {
        same = e == broken;
      }
      long started = System.nanoTime();
      client.cache().getOrCompute("report:" + run, () -> bytes("v2"),
          minute.waitFor(Duration.ofSeconds(20)));
      say("cache failed compute: " + same + " " + (millisSince(started) < 10_000));

      // A lock held for a block: released when the block ends.
      String name = "job:" + run;
      boolean ran = false;
      long fencing;
      try (HeldLock held = client.locks().hold(name, Duration.ofSeconds(5), Duration.ofSeconds(5))) {
        ran = true;
        fencing = held.fencingToken();
      }
      say("lock: " + ran + " " + (fencing > 0) + " free " + freeWithin(client, name, Duration.ofSeconds(10)));

      // A lock force-released while held: the loss is reported, and leaving the block is quiet.
      String other = "other:" + run;
      boolean reported;
      try (HeldLock held = client.locks().hold(other, Duration.ofSeconds(5), Duration.ofSeconds(5))) {
        client.locks().forceRelease(other);
        try {
          held.lost().get(15, TimeUnit.SECONDS);
          reported = held.isLost();
        } catch (TimeoutException e) {
          reported = false;
        }
      }
      say("lock lost: " + reported);

      // A subscription that outlives a restart of the server: a gap, then events again.
      String channel = "orders:" + run;
      try (Subscription subscription = client.events().subscribe(channel)) {
        subscription.awaitSubscribed(Duration.ofSeconds(10));
        client.events().publish(channel, "1");
        say("events: " + describe(subscription.poll(Duration.ofSeconds(10))));
        ask("restart");
        String gap = describe(subscription.poll(Duration.ofSeconds(60)));
        client.events().publish(channel, "2");
        say("events after restart: " + gap + " " + describe(subscription.poll(Duration.ofSeconds(30))));
      }

      // A paused server: the recipes fall back within their budget (200 ms).
      ask("pause");
      started = System.nanoTime();
      Decision open = client.rateLimit().check("paused:" + run, policy, CheckOptions.failOpen());
      long checkTook = millisSince(started);
      say("fail-open: " + open.allowed() + " " + open.fallback());
      started = System.nanoTime();
      byte[] fallback = client.cache().getOrCompute("fallback:" + run, () -> bytes("v3"), minute);
      long cacheTook = millisSince(started);
      say("cache fallback: " + text(fallback));
      say("fallbacks took " + checkTook + " " + cacheTook);
      ask("resume");
      say("done");
    }
  }

  /** Whether Inspect finds the lock free within {@code limit} (the server lets go as the stream ends). */
  private static boolean freeWithin(PatternsClient client, String name, Duration limit) throws InterruptedException {
    long deadline = System.nanoTime() + limit.toNanos();
    while (client.locks().inspect(name).held()) {
      if (System.nanoTime() > deadline) {
        return false;
      }
      Thread.sleep(50);
    }
    return true;
  }

  private static String describe(Events.Item item) {
    if (item == null) {
      return "nothing";
    }
    if (item instanceof Events.Event event) {
      return event.text();
    }
    return "gap";
  }

  private static void say(String line) {
    System.out.println(line);
    System.out.flush();
  }

  /** Ask the driver to act on the server, and wait for its answer. */
  private static void ask(String request) throws IOException {
    say("? " + request);
    DRIVER.readLine();
  }

  private static long millisSince(long started) {
    return (System.nanoTime() - started) / 1_000_000;
  }

  private static byte[] bytes(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }

  private static String text(byte[] value) {
    return new String(value, StandardCharsets.UTF_8);
  }
}
