package io.patterns.client;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.util.concurrent.Executor;

/**
 * Sends an API key as "authorization: Bearer <key>" on every call and stream, over TLS only:
 * over plaintext anyone on the path could read the key and call as its team, so such a call
 * fails UNAUTHENTICATED before it is sent.
 */
final class BearerKey extends CallCredentials {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private final String header;

  BearerKey(String key) {
    this.header = "Bearer " + key;
  }

  /** The key as sent: trimmed (a key read from a file often ends with a newline), checked. */
  static String checked(String apiKey) {
    String key = apiKey.strip();
    if (key.isEmpty()) {
      throw new IllegalArgumentException("the API key is empty");
    }
    // No message here names the key: a message may end up in a log.
    if (!key.chars().allMatch(c -> c >= 0x21 && c <= 0x7e)) {
      throw new IllegalArgumentException("the API key must be printable ASCII: it is sent as a header");
    }
    return key;
  }

  @Override
  public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
    if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
      applier.fail(Status.UNAUTHENTICATED.withDescription(
          "an API key is sent only over TLS: give the client tls(...)"));
      return;
    }
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, header);
    applier.apply(headers);
  }
}
