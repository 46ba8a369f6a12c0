package io.patterns.client;

import io.grpc.Status;
import io.patterns.session.v1.CreateRequest;
import io.patterns.session.v1.DestroyAllRequest;
import io.patterns.session.v1.DestroyRequest;
import io.patterns.session.v1.GetRequest;
import io.patterns.session.v1.ListRequest;
import io.patterns.session.v1.ListResponse;
import io.patterns.session.v1.RotateRequest;
import io.patterns.session.v1.SessionsGrpc;
import io.patterns.session.v1.UpdateRequest;
import java.time.Duration;
import java.time.Instant;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/** {@code client.sessions()}: sliding expiry, a per-user index, a cap per user, log out everywhere, rotation. */
public final class Sessions {
  private final Calls calls;
  private final SessionsGrpc.SessionsBlockingStub stub;

  Sessions(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(SessionsGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Sessions withTimeout(Duration timeout) {
    return new Sessions(calls.withTimeout(timeout));
  }

  /** A session; times from the Redis clock. Keep {@code id} secret. */
  public record Session(String id, String userId, Map<String, String> attributes,
      Instant createdAt, Instant lastSeenAt, Instant expiresAt) {}

  /** A page of a user's sessions (newest first), how many it has, and the next page's token ("" after the last). */
  public record SessionList(List<Session> sessions, long total, String nextPageToken) {}

  /** Start a session that ends {@code ttl} after its last touch. */
  public Session create(String userId, Duration ttl) {
    return create(userId, ttl, Map.of(), 0);
  }

  /** Start a session with attributes; beyond {@code maxPerUser} (0: the server's default) the user's soonest-ending end. */
  public Session create(String userId, Duration ttl, Map<String, String> attributes, int maxPerUser) {
    CreateRequest request = CreateRequest.newBuilder().setUserId(userId).setTtl(Convert.duration(ttl))
        .putAllAttributes(attributes).setMaxPerUser(maxPerUser).build();
    return session(calls.unary(stub, s -> s.create(request)).getSession());
  }

  /** The session; empty when it has ended, or never was. */
  public Optional<Session> get(String id) {
    return get(id, false);
  }

  /** The session, its end slid to its ttl from now when {@code touch}; empty when it has ended. */
  public Optional<Session> get(String id, boolean touch) {
    GetRequest request = GetRequest.newBuilder().setId(id).setTouch(touch).build();
    try {
      return Optional.of(session(calls.unary(stub, s -> s.get(request)).getSession()));
    } catch (PatternsException e) {
      if (e.code() == Status.Code.NOT_FOUND) {
        return Optional.empty();
      }
      throw e;
    }
  }

  /** Set and remove attributes, atomically; NOT_FOUND when the session has ended. */
  public Session update(String id, Map<String, String> set, Collection<String> remove) {
    UpdateRequest request = UpdateRequest.newBuilder().setId(id).putAllSet(set).addAllRemove(remove).build();
    return session(calls.unary(stub, s -> s.update(request)).getSession());
  }

  /** End a session; whether there was one. */
  public boolean destroy(String id) {
    DestroyRequest request = DestroyRequest.newBuilder().setId(id).build();
    return calls.unary(stub, s -> s.destroy(request)).getDestroyed();
  }

  /** A page of the user's live sessions, newest first: up to {@code limit} (0: 100) after {@code pageToken} ("" first). */
  public SessionList list(String userId, int limit, String pageToken) {
    ListRequest request = ListRequest.newBuilder().setUserId(userId).setLimit(limit).setPageToken(pageToken).build();
    ListResponse response = calls.unary(stub, s -> s.list(request));
    return new SessionList(response.getSessionsList().stream().map(Sessions::session).toList(),
        response.getTotal(), response.getNextPageToken());
  }

  /** End every session of the user but {@code exceptId} ("" : none kept); how many. */
  public long destroyAll(String userId, String exceptId) {
    DestroyAllRequest request = DestroyAllRequest.newBuilder().setUserId(userId).setExceptId(exceptId).build();
    return calls.unary(stub, s -> s.destroyAll(request)).getDestroyed();
  }

  /** The same session under a new id (the old one is dead); NOT_FOUND when it has ended. */
  public Session rotate(String id) {
    RotateRequest request = RotateRequest.newBuilder().setId(id).build();
    return session(calls.unary(stub, s -> s.rotate(request)).getSession());
  }

  private static Session session(io.patterns.session.v1.Session message) {
    return new Session(message.getId(), message.getUserId(), Map.copyOf(message.getAttributesMap()),
        Convert.instant(message.getCreatedAt()), Convert.instant(message.getLastSeenAt()),
        Convert.instant(message.getExpiresAt()));
  }
}
