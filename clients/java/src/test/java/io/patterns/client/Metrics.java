package io.patterns.client;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The live server's Prometheus metrics (PATTERNS_METRICS_URL), to see which RPCs a client
 * made. The server is shared with other tests: compare before and after.
 */
final class Metrics {
  static final String RATE_LIMITER = "patterns.ratelimit.v1.RateLimiter";
  private static final Pattern SAMPLE = Pattern.compile("^(\\w+)(?:\\{(.*)\\})? (\\S+)$");
  private static final Pattern LABEL = Pattern.compile("(\\w+)=\"((?:[^\"\\\\]|\\\\.)*)\"");

  private Metrics() {}

  /** The sum of the samples {@code name} whose labels include {@code labels}. */
  static double sum(String name, Map<String, String> labels) {
    String url = System.getenv("PATTERNS_METRICS_URL");
    if (url == null || url.isEmpty()) {
      fail("PATTERNS_METRICS_URL is unset: these tests need the live server's metrics URL");
    }
    String text;
    try (InputStream in = URI.create(url).toURL().openStream()) {
      text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new AssertionError("cannot read " + url, e);
    }
    double total = 0;
    for (String line : text.split("\n")) {
      Matcher sample = SAMPLE.matcher(line);
      if (line.startsWith("#") || !sample.matches() || !sample.group(1).equals(name)) {
        continue;
      }
      Matcher label = LABEL.matcher(sample.group(2) == null ? "" : sample.group(2));
      int matched = 0;
      while (label.find()) {
        if (label.group(2).equals(labels.get(label.group(1)))) {
          matched++;
        }
      }
      if (matched == labels.size()) {
        total += Double.parseDouble(sample.group(3));
      }
    }
    return total;
  }

  /** Unary Checks ended so far, whatever their status. */
  static double unaryChecks() {
    return sum("patterns_rpcs_total", Map.of("service", RATE_LIMITER, "method", "Check"));
  }

  /** CheckStreams open now. */
  static double checkStreamsOpen() {
    return sum("patterns_streams_open", Map.of("service", RATE_LIMITER, "method", "CheckStream"));
  }

  /**
   * CheckStreams opened so far: open now plus ended (a stream moves from one to the other,
   * so streams of earlier tests that end meanwhile do not change it).
   */
  static double checkStreamsOpened() {
    return checkStreamsOpen()
        + sum("patterns_rpcs_total", Map.of("service", RATE_LIMITER, "method", "CheckStream"));
  }

  /** Waits until {@code condition} holds, for {@code within} at most; fails saying {@code what}. */
  static void eventually(BooleanSupplier condition, Duration within, String what) {
    long deadline = System.nanoTime() + within.toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() - deadline > 0) {
        fail("not within " + within + ": " + what);
      }
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        fail("interrupted waiting for " + what);
      }
    }
  }
}
