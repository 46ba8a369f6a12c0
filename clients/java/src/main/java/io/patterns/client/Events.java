package io.patterns.client;

import com.google.protobuf.ByteString;
import io.patterns.events.v1.EventsGrpc;
import io.patterns.events.v1.PublishRequest;
import io.patterns.events.v1.SubscribeRequest;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Collection;
import java.util.List;

/**
 * {@code client.events()}: publish, and subscriptions that survive outages and say what they
 * missed:
 *
 * <pre>{@code
 * try (Subscription sub = client.events().subscribe("orders")) {
 *   sub.awaitSubscribed(Duration.ofSeconds(5));
 *   for (Events.Item item : sub) {
 *     if (item instanceof Events.Event event) handle(event.payload());
 *     else reload(); // a Gap: events published during an outage were lost
 *   }
 * }
 * }</pre>
 */
public final class Events {
  private final Calls calls;
  private final EventsGrpc.EventsBlockingStub stub;

  Events(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(EventsGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Events withTimeout(Duration timeout) {
    return new Events(calls.withTimeout(timeout));
  }

  /** What a subscription yields: an {@link Event}, or a {@link Gap}. */
  public sealed interface Item permits Event, Gap {}

  /**
   * A message: its channel, the pattern it matched ("" for a channel subscription), its
   * payload, and when the server received it.
   */
  public record Event(String channel, String pattern, byte[] payload, Instant receivedAt) implements Item {
    /** The payload as UTF-8 text. */
    public String text() {
      return new String(payload, StandardCharsets.UTF_8);
    }
  }

  /**
   * The subscription was interrupted by {@code cause} and is back: events published in
   * between were lost (Pub/Sub keeps nothing for absent subscribers): reload what you
   * derive from them.
   */
  public record Gap(PatternsException cause) implements Item {}

  /** Publish {@code payload} on {@code channel}; how many Redis subscriber connections took it. */
  public long publish(String channel, byte[] payload) {
    PublishRequest request = PublishRequest.newBuilder()
        .setChannel(channel).setPayload(ByteString.copyFrom(payload)).build();
    return calls.unary(stub, s -> s.publish(request)).getReceivers();
  }

  /** Publish UTF-8 text. */
  public long publish(String channel, String payload) {
    return publish(channel, payload.getBytes(StandardCharsets.UTF_8));
  }

  /** Events of {@code channels}, until closed. */
  public Subscription subscribe(String... channels) {
    return subscribe(List.of(channels), List.of());
  }

  /**
   * Events of {@code channels} and of the channels {@code patterns} match (globs), until
   * closed; the stream opens now. After an interruption that a new subscription cures, it
   * resubscribes with backoff and then yields a {@link Gap}.
   */
  public Subscription subscribe(Collection<String> channels, Collection<String> patterns) {
    // Batches: when this client falls behind, the server sends what it missed in one message
    // (far cheaper for both); the subscription yields the events one by one all the same.
    SubscribeRequest request = SubscribeRequest.newBuilder()
        .addAllChannels(channels).addAllPatterns(patterns).setBatch(true).build();
    return new Subscription(calls.prepare(EventsGrpc.newStub(calls.channel)), request, calls.channel);
  }
}
