package io.patterns.client;

import com.google.protobuf.ByteString;
import io.patterns.streams.v1.AppendRequest;
import io.patterns.streams.v1.AppendResponse;
import io.patterns.streams.v1.ConsumeOpen;
import io.patterns.streams.v1.ConsumeRequest;
import io.patterns.streams.v1.DeleteGroupRequest;
import io.patterns.streams.v1.InfoRequest;
import io.patterns.streams.v1.InfoResponse;
import io.patterns.streams.v1.ReadRequest;
import io.patterns.streams.v1.SetRetentionRequest;
import io.patterns.streams.v1.StartPosition;
import io.patterns.streams.v1.StreamsGrpc;
import io.patterns.streams.v1.TrimRequest;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;

/**
 * {@code client.streams()}: durable events, kept until a consumer of each group
 * acknowledges them (docs/streams.md):
 *
 * <pre>{@code
 * client.streams().append("orders", payload);
 * try (StreamConsumer consumer = client.streams().consume("orders", "billing", "worker-1")) {
 *   for (Streams.Message message : consumer) {
 *     handle(message.payload()); // idempotent: delivery is at least once
 *     message.ack();
 *   }
 * }
 * }</pre>
 */
public final class Streams {
  private final Calls calls;
  private final StreamsGrpc.StreamsBlockingStub stub;

  Streams(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(StreamsGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Streams withTimeout(Duration timeout) {
    return new Streams(calls.withTimeout(timeout));
  }

  /** What an append gave: the entry's id, and whether an earlier append of the same idempotency key made it. */
  public record Appended(String id, boolean duplicate) {}

  /** An entry as {@link #read} replays it; {@code appendedAt} is the time part of its id (Redis clock). */
  public record Entry(String id, byte[] payload, Map<String, String> headers, Instant appendedAt) {
    /** The payload as UTF-8 text. */
    public String text() {
      return new String(payload, StandardCharsets.UTF_8);
    }
  }

  /** Bounds of a stream, both applied when both are set: about the last maxLen entries (0: none), entries younger than maxAge (null: none). */
  public record Retention(long maxLen, Duration maxAge) {}

  /** A consumer of a group: entries delivered to it and not acknowledged, and how long since it last read. */
  public record ConsumerInfo(String name, long pending, Duration idle) {}

  /** A consumer group: entries pending, the last entry delivered to it, entries it has not been delivered yet (lag). */
  public record GroupInfo(String name, long pending, String lastDeliveredId, long lag, List<ConsumerInfo> consumers) {}

  /** A stream: whether it exists (the rest empty when not), its length, first and last ids ("" when none), retention and groups. */
  public record StreamInfo(boolean exists, long length, String firstId, String lastId, Retention retention,
      List<GroupInfo> groups) {}

  /** Append an entry to {@code stream} (made if new). */
  public Appended append(String stream, byte[] payload) {
    return append(stream, payload, Map.of(), null, null);
  }

  /** Append UTF-8 text. */
  public Appended append(String stream, String payload) {
    return append(stream, payload.getBytes(StandardCharsets.UTF_8));
  }

  /**
   * Append an entry with headers. With an {@code idempotencyKey} (null: none), a repeat of the
   * key within {@code idempotencyWindow} (null: the server's 24 hours) appends nothing and
   * answers the first append's id with {@code duplicate} true.
   */
  public Appended append(String stream, byte[] payload, Map<String, String> headers, String idempotencyKey,
      Duration idempotencyWindow) {
    AppendRequest.Builder request = AppendRequest.newBuilder().setStream(stream)
        .setPayload(ByteString.copyFrom(payload)).putAllHeaders(headers);
    if (idempotencyKey != null) {
      request.setIdempotencyKey(idempotencyKey);
    }
    if (idempotencyWindow != null) {
      request.setIdempotencyWindow(Convert.duration(idempotencyWindow));
    }
    AppendRequest built = request.build();
    AppendResponse response = calls.unary(stub, s -> s.append(built));
    return new Appended(response.getId(), response.getDuplicate());
  }

  /** Replay {@code stream} without a group from its oldest retained entry: at most {@code limit} (0: 100). */
  public List<Entry> read(String stream, int limit) {
    return read(ReadRequest.newBuilder().setStream(stream).setLimit(limit).build());
  }

  /** The entries after {@code afterId} (exclusive; "0": from the start), at most {@code limit}: read the next page after the last id. */
  public List<Entry> read(String stream, String afterId, int limit) {
    return read(ReadRequest.newBuilder().setStream(stream).setAfterId(afterId).setLimit(limit).build());
  }

  /** The entries appended at or after {@code at} (Redis clock), at most {@code limit}. */
  public List<Entry> read(String stream, Instant at, int limit) {
    return read(ReadRequest.newBuilder().setStream(stream).setAtTime(Convert.timestamp(at)).setLimit(limit).build());
  }

  private List<Entry> read(ReadRequest request) {
    return calls.unary(stub, s -> s.read(request)).getEntriesList().stream()
        .map(e -> new Entry(e.getId(), e.getPayload().toByteArray(), Map.copyOf(e.getHeadersMap()),
            Convert.instant(e.getAppendedAt())))
        .toList();
  }

  /** The stream's length, ids, retention, and groups with their consumers, pending entries and lag. */
  public StreamInfo info(String stream) {
    InfoRequest request = InfoRequest.newBuilder().setStream(stream).build();
    InfoResponse response = calls.unary(stub, s -> s.info(request));
    List<GroupInfo> groups = response.getGroupsList().stream()
        .map(g -> new GroupInfo(g.getName(), g.getPending(), g.getLastDeliveredId(), g.getLag(),
            g.getConsumersList().stream()
                .map(c -> new ConsumerInfo(c.getName(), c.getPending(), Convert.duration(c.getIdle())))
                .toList()))
        .toList();
    return new StreamInfo(response.getExists(), response.getLength(), response.getFirstId(), response.getLastId(),
        retention(response.getRetention()), groups);
  }

  /**
   * Delete entries from the start of {@code stream} once: beyond about {@code maxLen} (0: no
   * bound), older than {@code maxAge} (null: no bound), at least one; how many went. Pending
   * entries deleted are never delivered again.
   */
  public long trim(String stream, long maxLen, Duration maxAge) {
    TrimRequest request = TrimRequest.newBuilder().setStream(stream).setBounds(bounds(maxLen, maxAge)).build();
    return calls.unary(stub, s -> s.trim(request)).getDeleted();
  }

  /** Bound {@code stream} from now on (every append trims it; 0 and null: no bound) and apply the bounds now; how many entries that deleted. */
  public long setRetention(String stream, long maxLen, Duration maxAge) {
    SetRetentionRequest request = SetRetentionRequest.newBuilder().setStream(stream)
        .setRetention(bounds(maxLen, maxAge)).build();
    return calls.unary(stub, s -> s.setRetention(request)).getDeleted();
  }

  /** Delete {@code group} with its pending entries (they stay in the stream); its consumers end ABORTED. Whether there was one. */
  public boolean deleteGroup(String stream, String group) {
    DeleteGroupRequest request = DeleteGroupRequest.newBuilder().setStream(stream).setGroup(group).build();
    return calls.unary(stub, s -> s.deleteGroup(request)).getDeleted();
  }

  /** A consumer of {@code stream} as {@code consumer} of {@code group}, with the server's defaults (group made at new entries). */
  public StreamConsumer consume(String stream, String group, String consumer) {
    return consume(stream, group, consumer, ConsumeOptions.defaults());
  }

  /**
   * A consumer of {@code stream} as {@code consumer} of {@code group}: a blocking iterator of
   * {@link Message}s that opens its stream now and again after interruptions, until closed.
   */
  public StreamConsumer consume(String stream, String group, String consumer, ConsumeOptions options) {
    ConsumeOpen.Builder open = ConsumeOpen.newBuilder().setStream(stream).setGroup(group).setConsumer(consumer)
        .setMaxInFlight(options.maxInFlight()).setMaxDeliveries(options.maxDeliveries());
    if (options.startId() != null) {
      open.setStart(StartPosition.START_POSITION_AT_ID).setStartId(options.startId());
    } else if (options.startTime() != null) {
      open.setStart(StartPosition.START_POSITION_AT_TIME).setStartTime(Convert.timestamp(options.startTime()));
    } else {
      open.setStart(options.fromEarliest() ? StartPosition.START_POSITION_EARLIEST : StartPosition.START_POSITION_NEW);
    }
    if (options.ackTimeout() != null) {
      open.setAckTimeout(Convert.duration(options.ackTimeout()));
    }
    ConsumeRequest request = ConsumeRequest.newBuilder().setOpen(open).build();
    return new StreamConsumer(calls.prepare(StreamsGrpc.newStub(calls.channel)), request, calls.channel);
  }

  /**
   * The options of {@link #consume(String, String, String, ConsumeOptions)}: where a group
   * that does not exist yet starts (new entries; {@code earliest()}; after {@code startId};
   * at {@code startTime}), at most {@code maxInFlight} delivered and unacknowledged (0: 10),
   * {@code ackTimeout} before an unacknowledged entry is redelivered (null: 30 s), and
   * {@code maxDeliveries} before it moves to {@code <stream>:dead} (0: 5). Each method
   * returns a changed copy: {@code ConsumeOptions.defaults().earliest().maxInFlight(100)}.
   */
  public record ConsumeOptions(boolean fromEarliest, String startId, Instant startTime, int maxInFlight,
      Duration ackTimeout, int maxDeliveries) {
    /** New entries, and the server's limits. */
    public static ConsumeOptions defaults() {
      return new ConsumeOptions(false, null, null, 0, null, 0);
    }

    /** A new group starts at the oldest entry retained. */
    public ConsumeOptions earliest() {
      return new ConsumeOptions(true, null, null, maxInFlight, ackTimeout, maxDeliveries);
    }

    /** A new group starts after this entry id. */
    public ConsumeOptions startId(String startId) {
      return new ConsumeOptions(false, startId, null, maxInFlight, ackTimeout, maxDeliveries);
    }

    /** A new group starts at entries appended at or after this time (Redis clock). */
    public ConsumeOptions startTime(Instant startTime) {
      return new ConsumeOptions(false, null, startTime, maxInFlight, ackTimeout, maxDeliveries);
    }

    public ConsumeOptions maxInFlight(int maxInFlight) {
      return new ConsumeOptions(fromEarliest, startId, startTime, maxInFlight, ackTimeout, maxDeliveries);
    }

    public ConsumeOptions ackTimeout(Duration ackTimeout) {
      return new ConsumeOptions(fromEarliest, startId, startTime, maxInFlight, ackTimeout, maxDeliveries);
    }

    public ConsumeOptions maxDeliveries(int maxDeliveries) {
      return new ConsumeOptions(fromEarliest, startId, startTime, maxInFlight, ackTimeout, maxDeliveries);
    }
  }

  /**
   * An entry delivered to a consumer: {@code deliveryCount} is 1 the first time, more when
   * redelivered; {@code firstDeliveredAt} is when it was first delivered to the group,
   * {@code appendedAt} the time part of its id (Redis clock). {@link #ack()} it once handled,
   * or {@link #nack(Duration)} it to have it delivered again.
   */
  public static final class Message {
    private final String id;
    private final byte[] payload;
    private final Map<String, String> headers;
    private final int deliveryCount;
    private final Instant firstDeliveredAt;
    private final Instant appendedAt;
    private final StreamConsumer consumer;

    Message(io.patterns.streams.v1.Delivery delivery, StreamConsumer consumer) {
      this.id = delivery.getId();
      this.payload = delivery.getPayload().toByteArray();
      this.headers = Map.copyOf(delivery.getHeadersMap());
      this.deliveryCount = delivery.getDeliveryCount();
      this.firstDeliveredAt = Convert.instant(delivery.getFirstDeliveredAt());
      this.appendedAt = Convert.instant(delivery.getAppendedAt());
      this.consumer = consumer;
    }

    public String id() {
      return id;
    }

    public byte[] payload() {
      return payload.clone();
    }

    /** The payload as UTF-8 text. */
    public String text() {
      return new String(payload, StandardCharsets.UTF_8);
    }

    public Map<String, String> headers() {
      return headers;
    }

    public int deliveryCount() {
      return deliveryCount;
    }

    public Instant firstDeliveredAt() {
      return firstDeliveredAt;
    }

    public Instant appendedAt() {
      return appendedAt;
    }

    /**
     * Acknowledge it: handled, never delivered again. Sent on the consumer's stream (the next
     * one if it is being opened again), without waiting; throws CANCELLED when the consumer is
     * closed (the entry then comes back after the ack timeout).
     */
    public void ack() {
      consumer.ack(id);
    }

    /**
     * Hand it back: delivered again (to any consumer of the group) after {@code delay} (null
     * or zero: within a second), its delivery count one higher. INVALID_ARGUMENT, and nothing
     * sent, for a delay beyond the consumer's ack timeout.
     */
    public void nack(Duration delay) {
      consumer.nack(id, delay == null ? Duration.ZERO : delay);
    }

    @Override
    public String toString() {
      return "Message(" + id + ", deliveryCount=" + deliveryCount + ")";
    }
  }

  private static io.patterns.streams.v1.Retention bounds(long maxLen, Duration maxAge) {
    io.patterns.streams.v1.Retention.Builder bounds = io.patterns.streams.v1.Retention.newBuilder().setMaxLen(maxLen);
    if (maxAge != null) {
      bounds.setMaxAge(Convert.duration(maxAge));
    }
    return bounds.build();
  }

  private static Retention retention(io.patterns.streams.v1.Retention message) {
    Duration age = message.hasMaxAge() ? Convert.duration(message.getMaxAge()) : null;
    return new Retention(message.getMaxLen(), age == null || age.isZero() ? null : age);
  }
}
