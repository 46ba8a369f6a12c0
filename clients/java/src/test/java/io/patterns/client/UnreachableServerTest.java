package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The recipes' fallbacks against a port where nothing listens (real sockets, no server needed). */
class UnreachableServerTest {
  private static final Policy POLICY = Policy.gcra(10, Duration.ofMinutes(1), 4);
  private PatternsClient client;

  @BeforeEach
  void connect() throws IOException {
    int port;
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = socket.getLocalPort(); // closed again: connections to it are refused
    }
    client = PatternsClient.builder("127.0.0.1:" + port).timeout(Duration.ofSeconds(2)).build();
  }

  @AfterEach
  void close() {
    client.close();
  }

  @Test
  void aCheckFailsOpenWithTheCapacityLeft() {
    Decision decision = client.rateLimit().check("k", POLICY, CheckOptions.failOpen().cost(3));
    assertTrue(decision.allowed());
    assertTrue(decision.fallback());
    assertEquals(4, decision.limit()); // the burst: the policy's capacity
    assertEquals(1, decision.remaining());
    assertEquals(Duration.ZERO, decision.retryAfter());
  }

  @Test
  void anAsyncCheckFailsOpenOrRaises() {
    Decision decision = client.rateLimit().checkAsync("k", POLICY, CheckOptions.failOpen()).join();
    assertTrue(decision.allowed() && decision.fallback());
    java.util.concurrent.CompletionException e = assertThrows(java.util.concurrent.CompletionException.class,
        () -> client.rateLimit().checkAsync("k", POLICY, CheckOptions.defaults()).join());
    assertEquals(Status.Code.UNAVAILABLE, assertInstanceOf(PatternsException.class, e.getCause()).code());
  }

  @Test
  void aCheckFailsClosedForASecond() {
    Decision decision = client.rateLimit().check("k", POLICY, OnUnavailable.DENY);
    assertFalse(decision.allowed());
    assertTrue(decision.fallback());
    assertEquals(0, decision.remaining());
    assertEquals(Duration.ofSeconds(1), decision.retryAfter());
    assertEquals(1, decision.retryAfterSeconds());
  }

  @Test
  void aCheckRaisesByDefault() {
    PatternsException e = assertThrows(PatternsException.class, () -> client.rateLimit().check("k", POLICY));
    assertEquals(Status.Code.UNAVAILABLE, e.code());
  }

  @Test
  void getOrComputeComputesDirectly() {
    byte[] value = client.cache().getOrCompute("k", () -> "direct".getBytes(StandardCharsets.UTF_8));
    assertArrayEquals("direct".getBytes(StandardCharsets.UTF_8), value);
  }

  @Test
  void anApiKeyNeedsTls() {
    IllegalStateException e = assertThrows(IllegalStateException.class,
        () -> PatternsClient.builder("127.0.0.1:1").apiKey("secret").build());
    assertFalse(e.getMessage().contains("secret"));
    assertThrows(IllegalArgumentException.class, () -> PatternsClient.builder("127.0.0.1:1").apiKey(" \n"));
  }
}
