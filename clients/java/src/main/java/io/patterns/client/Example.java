package io.patterns.client;

import com.google.protobuf.ByteString;
import com.google.protobuf.Duration;
import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.AbstractStub;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.patterns.cache.v1.CacheGrpc;
import io.patterns.cache.v1.GetRequest;
import io.patterns.cache.v1.InvalidateTagsRequest;
import io.patterns.cache.v1.SetRequest;
import io.patterns.counter.v1.AddRequest;
import io.patterns.counter.v1.CountRequest;
import io.patterns.counter.v1.UniqueCounterGrpc;
import io.patterns.events.v1.EventsGrpc;
import io.patterns.events.v1.PublishRequest;
import io.patterns.events.v1.SubscribeRequest;
import io.patterns.events.v1.SubscribeResponse;
import io.patterns.leaderboard.v1.LeaderboardGrpc;
import io.patterns.leaderboard.v1.SubmitRequest;
import io.patterns.leaderboard.v1.TopRequest;
import io.patterns.leaderboard.v1.TopResponse;
import io.patterns.lock.v1.AcquireRequest;
import io.patterns.lock.v1.AcquireResponse;
import io.patterns.lock.v1.HoldRequest;
import io.patterns.lock.v1.HoldResponse;
import io.patterns.lock.v1.InspectRequest;
import io.patterns.lock.v1.LockerGrpc;
import io.patterns.lock.v1.ReleaseRequest;
import io.patterns.lock.v1.ReleaseResponse;
import io.patterns.ratelimit.v1.Algorithm;
import io.patterns.ratelimit.v1.CheckManyRequest;
import io.patterns.ratelimit.v1.CheckManyResponse;
import io.patterns.ratelimit.v1.CheckRequest;
import io.patterns.ratelimit.v1.CheckResponse;
import io.patterns.ratelimit.v1.Policy;
import io.patterns.ratelimit.v1.RateLimiterGrpc;
import io.patterns.session.v1.CreateRequest;
import io.patterns.session.v1.DestroyRequest;
import io.patterns.session.v1.SessionsGrpc;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * Calls every service of patterns-server once, as a team would from Java, and prints one
 * line per step. Usage: Example [host:port]. The connection comes from the environment:
 * PATTERNS_TARGET (host:port, default localhost:50051; an argument wins), PATTERNS_API_KEY,
 * PATTERNS_CA_FILE (TLS, trusting that CA), and PATTERNS_CERT_FILE with PATTERNS_KEY_FILE
 * (a client certificate, for mutual TLS).
 */
public final class Example {
  private static final Duration MINUTE = Duration.newBuilder().setSeconds(60).build();

  public static void main(String[] args) throws Exception {
    String target = args.length > 0 ? args[0] : setting("PATTERNS_TARGET", "localhost:50051");
    ManagedChannel channel = connect(target, setting("PATTERNS_API_KEY", null), new TlsFiles(
        setting("PATTERNS_CA_FILE", null), setting("PATTERNS_CERT_FILE", null), setting("PATTERNS_KEY_FILE", null)));
    String run = HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextInt());
    try {
      // Health: Check, and the first answer of Watch.
      var health = HealthGrpc.newBlockingStub(channel);
      HealthCheckResponse checked = within5s(health).check(HealthCheckRequest.getDefaultInstance());
      // A stream is read inside a context that ends it, whatever happens.
      HealthCheckResponse watched;
      Context.CancellableContext watching = Context.current().withCancellation();
      try {
        watched = watching.call(() -> within5s(health)
            .watch(HealthCheckRequest.newBuilder().setService("patterns.cache.v1.Cache").build())
            .next());
      } finally {
        watching.cancel(null);
      }
      System.out.println("health: " + checked.getStatus() + " " + watched.getStatus());

      // RateLimiter: GCRA, 3 per 60 s, checked 4 times; then two policies all or nothing.
      var limiter = RateLimiterGrpc.newBlockingStub(channel);
      Policy policy = Policy.newBuilder().setAlgorithm(Algorithm.ALGORITHM_GCRA).setLimit(3).setPeriod(MINUTE).build();
      List<Boolean> allowed = new ArrayList<>();
      CheckResponse last = null;
      for (int i = 0; i < 4; i++) {
        last = within5s(limiter)
            .check(CheckRequest.newBuilder().setKey("user:" + run).setPolicy(policy).build());
        allowed.add(last.getAllowed());
      }
      boolean retryAfter = last.getRetryAfter().getSeconds() > 0 || last.getRetryAfter().getNanos() > 0;
      System.out.println("ratelimit check: " + allowed + " retry_after>0: " + retryAfter);
      Policy daily = Policy.newBuilder().setAlgorithm(Algorithm.ALGORITHM_FIXED_WINDOW).setLimit(1000)
          .setPeriod(Duration.newBuilder().setSeconds(86_400)).build();
      CheckManyResponse many = within5s(limiter).checkMany(CheckManyRequest.newBuilder()
          .setAllOrNothing(true)
          .addChecks(CheckRequest.newBuilder().setKey("api:" + run).setPolicy(policy))
          .addChecks(CheckRequest.newBuilder().setKey("api:" + run).setPolicy(daily))
          .build());
      System.out.println("ratelimit check_many: " + many.getAllowed() + " " + many.getResultsCount());

      // UniqueCounter: Add, then Count.
      var counter = UniqueCounterGrpc.newBlockingStub(channel);
      within5s(counter).add(AddRequest.newBuilder().setKey("visitors:" + run).addItems("ann").addItems("bob").addItems("ann").build());
      long count = within5s(counter).count(CountRequest.newBuilder().addKeys("visitors:" + run).build()).getCount();
      System.out.println("counter count: " + count);

      // Events: Subscribe, wait for `subscribed`, Publish, receive the message.
      var events = EventsGrpc.newBlockingStub(channel);
      String eventsLine;
      Context.CancellableContext subscribing = Context.current().withCancellation();
      try {
        eventsLine = subscribing.call(() -> {
          Iterator<SubscribeResponse> stream = events.withDeadlineAfter(10, TimeUnit.SECONDS)
              .subscribe(SubscribeRequest.newBuilder().addChannels("orders:" + run).build());
          boolean subscribed = stream.next().hasSubscribed();
          within5s(events).publish(PublishRequest.newBuilder()
              .setChannel("orders:" + run).setPayload(ByteString.copyFromUtf8("order 42")).build());
          return subscribed + " " + stream.next().getEvent().getPayload().toStringUtf8();
        });
      } finally {
        subscribing.cancel(null);
      }
      System.out.println("events: " + eventsLine);

      // Locker: Acquire and Release; then Hold, which a cancel releases.
      var locker = LockerGrpc.newBlockingStub(channel);
      String name = "report:" + run;
      Duration thirty = Duration.newBuilder().setSeconds(30).build();
      AcquireResponse lease = within5s(locker)
          .acquire(AcquireRequest.newBuilder().setName(name).setTtl(thirty).build());
      ReleaseResponse released = within5s(locker)
          .release(ReleaseRequest.newBuilder().setName(name).setToken(lease.getToken()).build());
      // A Hold's deadline is the longest it may keep the lock; the cancel releases it sooner.
      HoldResponse held;
      Context.CancellableContext holding = Context.current().withCancellation();
      try {
        held = holding.call(() -> locker.withDeadlineAfter(60, TimeUnit.SECONDS)
            .hold(HoldRequest.newBuilder().setName(name).setTtl(thirty).build()).next());
      } finally {
        holding.cancel(null);
      }
      boolean freed = false;
      for (int i = 0; i < 100 && !freed; i++) {
        freed = !within5s(locker)
            .inspect(InspectRequest.newBuilder().setName(name).build()).getHeld();
        Thread.sleep(50);
      }
      System.out.println("locker: " + lease.getAcquired() + " " + released.getStatus() + " " + held.hasAcquired()
          + " freed: " + freed);

      // Cache: Set with a tag, Get, InvalidateTags.
      var cache = CacheGrpc.newBlockingStub(channel);
      within5s(cache).set(SetRequest.newBuilder().setKey("page:" + run).setValue(ByteString.copyFromUtf8("<html>"))
          .setTtl(MINUTE).addTags("pages:" + run).build());
      String value = within5s(cache).get(GetRequest.newBuilder().setKey("page:" + run).build()).getValue().toStringUtf8();
      long invalidated = within5s(cache).invalidateTags(InvalidateTagsRequest.newBuilder().addTags("pages:" + run).build()).getDeleted();
      System.out.println("cache: " + value + " " + invalidated);

      // Leaderboard: Submit, Top.
      var board = LeaderboardGrpc.newBlockingStub(channel);
      within5s(board).submit(SubmitRequest.newBuilder().setBoard("chess:" + run).setMember("ann").setScore(1200).build());
      within5s(board).submit(SubmitRequest.newBuilder().setBoard("chess:" + run).setMember("bob").setScore(1100).build());
      TopResponse top = within5s(board).top(TopRequest.newBuilder().setBoard("chess:" + run).setLimit(10).build());
      System.out.println("leaderboard: " + top.getEntries(0).getMember() + " " + top.getEntries(0).getRank() + " "
          + top.getTotal());

      // Sessions: Create, Get with touch, Destroy.
      var sessions = SessionsGrpc.newBlockingStub(channel);
      String id = within5s(sessions).create(CreateRequest.newBuilder().setUserId("u:" + run)
          .setTtl(Duration.newBuilder().setSeconds(1800)).putAttributes("agent", "java").build()).getSession().getId();
      String agent = within5s(sessions).get(io.patterns.session.v1.GetRequest.newBuilder().setId(id).setTouch(true).build())
          .getSession().getAttributesOrThrow("agent");
      boolean destroyed = within5s(sessions).destroy(DestroyRequest.newBuilder().setId(id).build()).getDestroyed();
      System.out.println("sessions: " + agent + " " + destroyed);

      // A bad request, read back through the error helper.
      try {
        within5s(limiter).check(CheckRequest.newBuilder().setKey("").setPolicy(policy).build());
        throw new IllegalStateException("an empty key was accepted");
      } catch (StatusRuntimeException e) {
        ErrorDetails details = ErrorDetails.of(e);
        System.out.println("invalid: " + details.code() + " " + details.fieldViolations().get(0).field() + " "
            + details.reason());
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /**
   * PEM files: the CA the server's certificate chains to (null: plaintext), and this client's
   * certificate and key, for a server that asks for one (mutual TLS).
   */
  record TlsFiles(String ca, String cert, String key) {}

  /** A channel to {@code target} that sends {@code apiKey} (when not null) on every call. */
  static ManagedChannel connect(String target, String apiKey, TlsFiles files) throws IOException {
    ChannelCredentials credentials = InsecureChannelCredentials.create();
    if (files.ca() != null) {
      TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder().trustManager(new File(files.ca()));
      if (files.cert() != null) {
        tls.keyManager(new File(files.cert()), new File(files.key()));
      }
      credentials = tls.build();
    }
    if (apiKey != null) {
      credentials = CompositeChannelCredentials.create(credentials, new BearerKey(apiKey));
    }
    return Grpc.newChannelBuilder(target, credentials).build();
  }

  /** Sends an API key as "authorization: Bearer <key>" on every call and stream. */
  static final class BearerKey extends CallCredentials {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final String key;

    BearerKey(String key) {
      this.key = key;
    }

    @Override
    public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
      // Over plaintext anyone on the path could read the key and call as this team.
      if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
        applier.fail(Status.UNAUTHENTICATED.withDescription("an API key is sent only over TLS: set PATTERNS_CA_FILE"));
        return;
      }
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + key);
      applier.apply(headers);
    }
  }

  /** The environment variable {@code name}, or {@code fallback} when it is unset or empty. */
  private static String setting(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }

  /** The stub with a deadline 5 s from now, for one call (a deadline is an instant, not a length). */
  private static <S extends AbstractStub<S>> S within5s(S stub) {
    return stub.withDeadlineAfter(5, TimeUnit.SECONDS);
  }

  private Example() {}
}
