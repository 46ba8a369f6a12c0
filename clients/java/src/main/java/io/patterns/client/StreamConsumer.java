package io.patterns.client;

import io.grpc.Channel;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.patterns.streams.v1.Ack;
import io.patterns.streams.v1.ConsumeRequest;
import io.patterns.streams.v1.ConsumeResponse;
import io.patterns.streams.v1.Nack;
import io.patterns.streams.v1.StreamsGrpc;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A consumer of {@link Streams#consume}: a blocking iterator of {@link Streams.Message}s, for
 * one reader; {@link #close()} (or leaving its try block) ends it.
 *
 * <p>Acks and nacks travel on the consumer's own stream and never wait for the server: they
 * are queued, and those given while the transport is busy go together in one message. When
 * the stream fails in a way that opening it again cures (UNAVAILABLE: the server or its Redis
 * unavailable or stopping, a cut connection; RESOURCE_EXHAUSTED; the server ending the
 * stream), it opens it again after a backoff, doubling from 0.1 s to 5 s with jitter, at least
 * the server's RetryInfo. Nothing is lost: the group and its pending entries live in Redis,
 * and what was delivered and not acknowledged comes back by redelivery (its delivery count one
 * higher); acks the broken stream did not carry go on the next one. Other failures (a bad
 * argument, the group deleted: ABORTED) end it: {@link #hasNext()} throws that
 * PatternsException.
 */
public final class StreamConsumer implements Iterator<Streams.Message>, Iterable<Streams.Message>, AutoCloseable {
  // close() gives the server this long after the last ack or nack was sent before it cancels
  // the stream: the contract confirms no ack, and the server drops those it has not read yet
  // when the stream is cancelled (they would come back after the ack timeout).
  static final Duration CLOSE_SETTLE = Duration.ofMillis(500);
  // The contract's limit of ids in one Ack or Nack.
  static final int MAX_IDS = 10_000;

  private final StreamsGrpc.StreamsStub stub;
  private final ConsumeRequest request;
  private final Channel channel;
  private final Object lock = new Object();
  // What the reader takes: a Message, or End.
  private final LinkedBlockingQueue<Object> queue = new LinkedBlockingQueue<>();
  private final Subscription.Backoff backoff = new Subscription.Backoff();

  // Guarded by lock.
  private ClientCallStreamObserver<ConsumeRequest> call;
  private int attempt;
  private boolean subscribed;
  private boolean closed;
  private PatternsException failure;
  private Duration ackTimeout; // in force, as the server confirmed it
  // Acks and nacks not yet sent (none open, or the transport busy): ack ids, and nack ids by delay.
  private final List<String> unsentAcks = new ArrayList<>();
  private final Map<Duration, List<String>> unsentNacks = new LinkedHashMap<>();
  private long lastSentNanos;
  private boolean sentAny;

  // The reader's own.
  private Streams.Message next;
  private End end;

  private record End(PatternsException failure) {}

  StreamConsumer(StreamsGrpc.StreamsStub stub, ConsumeRequest request, Channel channel) {
    this.stub = stub;
    this.request = request;
    this.channel = channel;
    open();
  }

  /**
   * Wait until the server has confirmed the consumer (its group made if new): an entry
   * appended after this returns reaches the group. Consumes no message. Throws
   * DEADLINE_EXCEEDED when no confirmation came within {@code timeout} (the consumer goes on
   * trying), the failure that ended it, or CANCELLED when it is closed.
   */
  public void awaitSubscribed(Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    synchronized (lock) {
      while (!subscribed) {
        if (failure != null) {
          throw failure;
        }
        if (closed) {
          throw new PatternsException(Status.Code.CANCELLED, "the consumer is closed");
        }
        long left = deadline - System.nanoTime();
        if (left <= 0) {
          throw new PatternsException(Status.Code.DEADLINE_EXCEEDED,
              "the server did not confirm the consumer within " + timeout.toMillis() + " ms");
        }
        try {
          TimeUnit.NANOSECONDS.timedWait(lock, left);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for the consumer");
        }
      }
    }
  }

  /** Whether the server confirms the consumer now (false while it opens the stream again). */
  public boolean isSubscribed() {
    synchronized (lock) {
      return subscribed;
    }
  }

  /** This consumer, for a for-each loop (one reader: it is its own iterator). */
  @Override
  public Iterator<Streams.Message> iterator() {
    return this;
  }

  /** Waits for the next message: true when there is one; false once closed; throws the failure that ended it. */
  @Override
  public boolean hasNext() {
    while (next == null) {
      if (end != null) {
        return finish();
      }
      try {
        take(queue.take());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for a message");
      }
    }
    return true;
  }

  @Override
  public Streams.Message next() {
    if (!hasNext()) {
      throw new NoSuchElementException("the consumer is closed");
    }
    Streams.Message message = next;
    next = null;
    return message;
  }

  /** The next message within {@code timeout}; null when none came by then, or once closed. Throws the failure that ended it. */
  public Streams.Message poll(Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (next == null) {
      if (end != null) {
        finish();
        return null;
      }
      try {
        Object taken = queue.poll(Math.max(deadline - System.nanoTime(), 0), TimeUnit.NANOSECONDS);
        if (taken == null) {
          return null;
        }
        take(taken);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for a message");
      }
    }
    return next();
  }

  /**
   * End the consumer: the acks and nacks given so far are sent (while a stream is open;
   * between streams they are dropped, and their entries come back), and the stream is cancelled
   * half a second after the last was (time for the server to apply them; no wait when none
   * was sent that recently). A reader waiting is told there is no more. Messages delivered and
   * not acknowledged go to the group again after the ack timeout.
   */
  @Override
  public void close() {
    long settleUntil;
    ClientCallStreamObserver<ConsumeRequest> ending;
    synchronized (lock) {
      if (closed) {
        return;
      }
      if (call != null && subscribed) {
        flush(true); // the transport buffers what it cannot write yet: nothing is left behind
      }
      closed = true;
      subscribed = false;
      ending = call;
      settleUntil = sentAny ? lastSentNanos + CLOSE_SETTLE.toNanos() : System.nanoTime();
      queue.clear();
      queue.add(new End(null));
      lock.notifyAll();
    }
    if (ending == null) {
      return;
    }
    long left = settleUntil - System.nanoTime();
    if (left > 0) {
      try {
        TimeUnit.NANOSECONDS.sleep(Math.min(left, CLOSE_SETTLE.toNanos()));
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    ending.cancel("the consumer was closed", null);
  }

  void ack(String id) {
    synchronized (lock) {
      refuseClosed();
      unsentAcks.add(id);
      flush(false);
    }
  }

  void nack(String id, Duration delay) {
    synchronized (lock) {
      refuseClosed();
      // The server refuses a delay beyond the ack timeout by ending the stream, which would
      // take every message in flight with it: refuse it here instead, sending nothing.
      if (delay.isNegative() || (ackTimeout != null && delay.compareTo(ackTimeout) > 0)) {
        String limit = ackTimeout == null ? "the ack timeout" : ackTimeout.toMillis() + " ms";
        throw new PatternsException(Status.Code.INVALID_ARGUMENT,
            "nack.delay must be 0 to the ack timeout (" + limit + "); got " + delay.toMillis() + " ms");
      }
      unsentNacks.computeIfAbsent(delay, d -> new ArrayList<>()).add(id);
      flush(false);
    }
  }

  private void refuseClosed() {
    if (closed) {
      throw new PatternsException(Status.Code.CANCELLED,
          "the consumer is closed: the entry is delivered again after its ack timeout");
    }
  }

  /**
   * Send the acks and nacks waiting, as few messages as the contract allows, when a stream is
   * open and confirmed and its transport ready (or {@code anyway}); else they wait for the
   * transport's onReady, or for the next stream. Under the lock.
   */
  private void flush(boolean anyway) {
    if (call == null || !subscribed || (!anyway && !call.isReady())) {
      return;
    }
    if (unsentAcks.isEmpty() && unsentNacks.isEmpty()) {
      return;
    }
    for (int start = 0; start < unsentAcks.size(); start += MAX_IDS) {
      List<String> chunk = unsentAcks.subList(start, Math.min(unsentAcks.size(), start + MAX_IDS));
      call.onNext(ConsumeRequest.newBuilder().setAck(Ack.newBuilder().addAllIds(chunk)).build());
    }
    for (Map.Entry<Duration, List<String>> nacks : unsentNacks.entrySet()) {
      List<String> ids = nacks.getValue();
      for (int start = 0; start < ids.size(); start += MAX_IDS) {
        Nack.Builder nack = Nack.newBuilder().addAllIds(ids.subList(start, Math.min(ids.size(), start + MAX_IDS)));
        if (!nacks.getKey().isZero()) {
          nack.setDelay(Convert.duration(nacks.getKey()));
        }
        call.onNext(ConsumeRequest.newBuilder().setNack(nack).build());
      }
    }
    unsentAcks.clear();
    unsentNacks.clear();
    lastSentNanos = System.nanoTime();
    sentAny = true;
  }

  private void take(Object taken) {
    if (taken instanceof Streams.Message message) {
      next = message;
    } else {
      end = (End) taken;
    }
  }

  private boolean finish() {
    if (end.failure() != null) {
      throw end.failure();
    }
    return false;
  }

  /** Open a stream (the first, or after a backoff), unless closed meanwhile. */
  private void open() {
    synchronized (lock) {
      if (closed) {
        return;
      }
      attempt++;
      stub.consume(new Stream(attempt));
      call.onNext(request);
    }
  }

  /** One stream's callbacks; a stream that is not the current one is ignored. */
  private final class Stream implements ClientResponseObserver<ConsumeRequest, ConsumeResponse> {
    private final int mine;

    Stream(int mine) {
      this.mine = mine;
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<ConsumeRequest> stream) {
      call = stream; // called within open(), under the lock
      // Acks given while the transport was busy go once it can take more.
      stream.setOnReadyHandler(() -> {
        synchronized (lock) {
          if (!closed && attempt == mine) {
            flush(false);
          }
        }
      });
    }

    @Override
    public void onNext(ConsumeResponse response) {
      synchronized (lock) {
        if (closed || attempt != mine) {
          return; // what arrives while closing is delivered again, later
        }
        if (response.hasSubscribed()) {
          subscribed = true;
          ackTimeout = response.getSubscribed().hasAckTimeout()
              ? Convert.duration(response.getSubscribed().getAckTimeout()) : null;
          backoff.reset();
          lock.notifyAll();
          flush(false); // what the last stream did not carry
          return;
        }
        if (response.hasDelivery()) {
          queue.add(new Streams.Message(response.getDelivery(), StreamConsumer.this));
        }
      }
    }

    @Override
    public void onError(Throwable error) {
      failed(PatternsException.from(error));
    }

    @Override
    public void onCompleted() {
      failed(new PatternsException(Status.Code.UNAVAILABLE, "the server ended the stream"));
    }

    private void failed(PatternsException error) {
      synchronized (lock) {
        if (closed || attempt != mine) {
          return;
        }
        subscribed = false;
        boolean shutDown = channel instanceof ManagedChannel managed && managed.isShutdown();
        if (!Subscription.resumable(error) || shutDown) {
          failure = error;
          queue.add(new End(error));
          lock.notifyAll();
          return;
        }
        Duration delay = backoff.after(error);
        CompletableFuture.delayedExecutor(delay.toNanos(), TimeUnit.NANOSECONDS).execute(StreamConsumer.this::open);
      }
    }
  }
}
