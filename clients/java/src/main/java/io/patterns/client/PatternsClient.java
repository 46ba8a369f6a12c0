package io.patterns.client;

import io.grpc.CallCredentials;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * A connection to patterns-server, one accessor per service:
 *
 * <pre>{@code
 * try (PatternsClient client = PatternsClient.builder("patterns.internal:50051")
 *     .tls(Path.of("ca.pem"))
 *     .apiKey(System.getenv("PATTERNS_API_KEY"))
 *     .build()) {
 *   Decision decision = client.rateLimit().check("user:42", Policy.gcra(100, Duration.ofMinutes(1)));
 * }
 * }</pre>
 *
 * <p>Every unary call has a deadline: the client's {@link Builder#timeout timeout} (5 s by
 * default), or a service's own ({@code client.cache().withTimeout(Duration.ofSeconds(1))}).
 * One client serves a whole process: its methods are thread-safe. {@link #close()} closes
 * the channel it opened (not one it was given), cancelling what is in progress.
 */
public final class PatternsClient implements AutoCloseable {
  /** The deadline of every call unless told otherwise, as the Python client's. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(5);

  private final Channel channel;
  private final ManagedChannel owned;
  private final String description;
  private final RateLimiter rateLimit;
  private final UniqueCounter counter;
  private final Events events;
  private final Locks locks;
  private final Cache cache;
  private final Leaderboard leaderboard;
  private final Sessions sessions;
  private final Streams streams;
  private final CheckStream checkStream; // null: checks are unary

  private PatternsClient(Channel channel, ManagedChannel owned, CallCredentials key, Duration timeout,
      boolean streamChecks, String description) {
    this.channel = channel;
    this.owned = owned;
    this.description = description;
    Calls calls = new Calls(channel, key, timeout);
    this.checkStream = streamChecks ? new CheckStream(calls) : null;
    this.rateLimit = new RateLimiter(calls, checkStream);
    this.counter = new UniqueCounter(calls);
    this.events = new Events(calls);
    this.locks = new Locks(calls);
    this.cache = new Cache(calls);
    this.leaderboard = new Leaderboard(calls);
    this.sessions = new Sessions(calls);
    this.streams = new Streams(calls);
  }

  /** A client of the server at {@code target} ("host:port", or any gRPC target). */
  public static Builder builder(String target) {
    return new Builder(Convert.required(target, "target"));
  }

  /** A client over a channel made elsewhere (with interceptors, say), which it does not close. */
  public static Builder builder(Channel channel) {
    return new Builder(null).channel(channel);
  }

  /**
   * A builder from the environment: PATTERNS_TARGET (default localhost:50051),
   * PATTERNS_API_KEY, PATTERNS_CA_FILE (TLS trusting that CA), PATTERNS_CERT_FILE and
   * PATTERNS_KEY_FILE (a client certificate, for mutual TLS). Unset or empty: not used.
   */
  public static Builder fromEnv() {
    Builder builder = builder(setting("PATTERNS_TARGET", "localhost:50051"));
    String key = setting("PATTERNS_API_KEY", null);
    if (key != null) {
      builder.apiKey(key);
    }
    String ca = setting("PATTERNS_CA_FILE", null);
    String cert = setting("PATTERNS_CERT_FILE", null);
    String privateKey = setting("PATTERNS_KEY_FILE", null);
    if ((cert == null) != (privateKey == null)) {
      throw new IllegalArgumentException("PATTERNS_CERT_FILE and PATTERNS_KEY_FILE go together");
    }
    if (cert != null) {
      builder.tls(ca == null ? null : Path.of(ca), Path.of(cert), Path.of(privateKey));
    } else if (ca != null) {
      builder.tls(Path.of(ca));
    }
    return builder;
  }

  /** RateLimiter: checks against policies, failing open or closed within a budget. */
  public RateLimiter rateLimit() {
    return rateLimit;
  }

  /** UniqueCounter: distinct items, estimated (HyperLogLog). */
  public UniqueCounter counter() {
    return counter;
  }

  /** Events: publish, and subscriptions that survive outages and report gaps. */
  public Events events() {
    return events;
  }

  /** Locker: leases with fencing tokens, and locks held for a block of work. */
  public Locks locks() {
    return locks;
  }

  /** Cache: values with expiry and tags, and getOrCompute with a fill lease. */
  public Cache cache() {
    return cache;
  }

  /** Leaderboard: scores, fair ranks, pages, neighbours, periodic boards. */
  public Leaderboard leaderboard() {
    return leaderboard;
  }

  /** Sessions: sliding expiry, a per-user index, rotation. */
  public Sessions sessions() {
    return sessions;
  }

  /** Streams: durable events, consumer groups with ack / nack, replay, retention. */
  public Streams streams() {
    return streams;
  }

  /**
   * The channel, for stubs of your own (they get neither the client's deadline nor its API
   * key: add them, as {@code withDeadlineAfter} and {@code withCallCredentials}).
   */
  public Channel channel() {
    return channel;
  }

  /**
   * Ends the client's check stream (on a given channel too) and closes the channel the client
   * opened (cancelling calls and streams in progress).
   */
  @Override
  public void close() {
    if (checkStream != null) {
      checkStream.close();
    }
    if (owned == null) {
      return;
    }
    owned.shutdownNow();
    try {
      owned.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** How the client was made: its target, whether it has TLS and a key (never the key). */
  @Override
  public String toString() {
    return description;
  }

  private static String setting(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }

  /** How a PatternsClient connects. */
  public static final class Builder {
    private final String target;
    private Channel channel;
    private Duration timeout = DEFAULT_TIMEOUT;
    private String apiKey;
    private ChannelCredentials tls;
    private boolean streamChecks = true;

    private Builder(String target) {
      this.target = target;
    }

    /** The deadline of every call (default 5 s); calls that wait on the server get that much longer. */
    public Builder timeout(Duration timeout) {
      this.timeout = Calls.positive(timeout, "timeout");
      return this;
    }

    /**
     * The team's API key, sent as "authorization: Bearer <key>" on every call and stream;
     * over TLS only (build() refuses a plaintext channel of its own; over a given plaintext
     * channel every call fails UNAUTHENTICATED before it is sent).
     */
    public Builder apiKey(String apiKey) {
      this.apiKey = BearerKey.checked(Convert.required(apiKey, "apiKey"));
      return this;
    }

    /** TLS trusting the system's roots (a server certificate from a public CA). */
    public Builder tls() {
      this.tls = TlsChannelCredentials.create();
      return this;
    }

    /** TLS trusting the CA of the PEM file {@code caFile} (null: the system's roots). */
    public Builder tls(Path caFile) {
      return tls(caFile, null, null);
    }

    /**
     * Mutual TLS: trusting {@code caFile} (null: the system's roots), presenting the client
     * certificate {@code certFile} with its private key {@code keyFile} (PEM files, read now).
     */
    public Builder tls(Path caFile, Path certFile, Path keyFile) {
      if ((certFile == null) != (keyFile == null)) {
        throw new IllegalArgumentException("certFile and keyFile go together");
      }
      TlsChannelCredentials.Builder builder = TlsChannelCredentials.newBuilder();
      try {
        if (caFile != null) {
          builder.trustManager(caFile.toFile());
        }
        if (certFile != null) {
          builder.keyManager(certFile.toFile(), keyFile.toFile());
        }
      } catch (IOException e) {
        throw new UncheckedIOException("cannot read the TLS files", e);
      }
      this.tls = builder.build();
      return this;
    }

    /** TLS as these credentials (any grpc-java ChannelCredentials). */
    public Builder tls(ChannelCredentials credentials) {
      this.tls = Convert.required(credentials, "credentials");
      return this;
    }

    /**
     * Whether {@code rateLimit().check} (and {@code checkAsync}) sends its checks over one
     * CheckStream that the whole client shares (true, the default: the server decides the
     * checks that arrive together in one Redis round trip) or a unary Check per call (false).
     * The same decisions, errors and fallbacks either way.
     */
    public Builder streamChecks(boolean streamChecks) {
      this.streamChecks = streamChecks;
      return this;
    }

    /** Use this channel (made elsewhere) rather than open one; close() leaves it open. */
    public Builder channel(Channel channel) {
      this.channel = Convert.required(channel, "channel");
      return this;
    }

    public PatternsClient build() {
      CallCredentials key = apiKey == null ? null : new BearerKey(apiKey);
      String keyed = ", apiKey=" + (apiKey == null ? "none" : "<hidden>");
      if (channel != null) {
        if (tls != null) {
          throw new IllegalStateException("tls(...) is for the channel the client opens, not a given one");
        }
        return new PatternsClient(channel, null, key, timeout, streamChecks, "PatternsClient(<channel>" + keyed + ")");
      }
      if (apiKey != null && tls == null) {
        throw new IllegalStateException(
            "an API key is sent only over TLS: give tls(...) too (over plaintext anyone on the path could read it)");
      }
      ChannelCredentials credentials = tls == null ? InsecureChannelCredentials.create() : tls;
      ManagedChannel opened = Grpc.newChannelBuilder(target, credentials).build();
      String made = "PatternsClient(" + target + ", tls=" + (tls != null) + keyed + ")";
      return new PatternsClient(opened, opened, key, timeout, streamChecks, made);
    }
  }
}
