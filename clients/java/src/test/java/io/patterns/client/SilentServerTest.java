package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The check's fallbacks against a port that accepts connections and never answers (as a
 * paused server), over the check stream (the default) and unary: real sockets, no server.
 */
class SilentServerTest {
  private static final Policy POLICY = Policy.gcra(10, Duration.ofMinutes(1), 4);
  private ServerSocket silent;
  private final List<Socket> accepted = new ArrayList<>();

  @BeforeEach
  void listen() throws IOException {
    silent = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    Thread acceptor = new Thread(() -> {
      try {
        while (true) {
          Socket socket = silent.accept(); // kept open, never read nor written
          synchronized (accepted) {
            accepted.add(socket);
          }
        }
      } catch (IOException closed) {
        // the test is over
      }
    }, "silent-accept");
    acceptor.setDaemon(true);
    acceptor.start();
  }

  @AfterEach
  void close() throws IOException {
    silent.close();
    synchronized (accepted) {
      for (Socket socket : accepted) {
        socket.close();
      }
    }
  }

  private PatternsClient client(boolean streamChecks) {
    return PatternsClient.builder("127.0.0.1:" + silent.getLocalPort())
        .timeout(Duration.ofSeconds(1)).streamChecks(streamChecks).build();
  }

  @Test
  void overTheStreamACheckFallsBackWithinItsBudgetOrRaisesAtItsDeadline() {
    try (PatternsClient client = client(true)) {
      checksFallBack(client);
      assertEquals(0, client.rateLimit().checkStream().inProgress()); // the checks that gave up are forgotten
    }
  }

  @Test
  void unaryACheckFallsBackWithinItsBudgetOrRaisesAtItsDeadline() {
    try (PatternsClient client = client(false)) {
      checksFallBack(client);
    }
  }

  private static void checksFallBack(PatternsClient client) {
    Decision open = client.rateLimit().check("k", POLICY, CheckOptions.failOpen().cost(3));
    assertTrue(open.allowed() && open.fallback());
    assertEquals(1, open.remaining());
    Decision closed = client.rateLimit().checkAsync("k", POLICY, CheckOptions.failClosed()).join();
    assertFalse(closed.allowed());
    assertTrue(closed.fallback());
    PatternsException e = assertThrows(PatternsException.class, () -> client.rateLimit().check("k", POLICY));
    assertEquals(Status.Code.DEADLINE_EXCEEDED, e.code());
  }
}
