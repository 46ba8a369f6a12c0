package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.grpc.Status;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** A subscription across a cut connection (live server) and while no server answers. */
class ResubscribeTest {
  @Test
  void aCutConnectionReadsAsAGapThenEventsAgain() throws IOException {
    String run = Live.run();
    String channel = "cut:" + run;
    try (PatternsClient direct = PatternsClient.builder(Live.target()).build();
        CuttableProxy proxy = new CuttableProxy(Live.target());
        PatternsClient relayed = PatternsClient.builder(proxy.target()).build();
        Subscription subscription = relayed.events().subscribe(channel)) {
      subscription.awaitSubscribed(Duration.ofSeconds(10));
      direct.events().publish(channel, "before");
      assertEquals("before", assertInstanceOf(Events.Event.class, subscription.poll(Duration.ofSeconds(10))).text());

      proxy.cut();
      // The gap comes once the server has confirmed the new subscription: what is published
      // after it is received.
      Events.Gap gap = assertInstanceOf(Events.Gap.class, subscription.poll(Duration.ofSeconds(30)));
      assertEquals(Status.Code.UNAVAILABLE, gap.cause().code());
      direct.events().publish(channel, "after");
      assertEquals("after", assertInstanceOf(Events.Event.class, subscription.poll(Duration.ofSeconds(10))).text());
    }
  }

  @Test
  void withNoServerItKeepsTryingUntilClosed() throws IOException {
    int port;
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = socket.getLocalPort();
    }
    try (PatternsClient client = PatternsClient.builder("127.0.0.1:" + port).build()) {
      Subscription subscription = client.events().subscribe("nobody");
      PatternsException late = assertThrows(PatternsException.class,
          () -> subscription.awaitSubscribed(Duration.ofMillis(500)));
      assertEquals(Status.Code.DEADLINE_EXCEEDED, late.code()); // not the UNAVAILABLE of each try
      assertNull(subscription.poll(Duration.ofMillis(300)));
      subscription.close();
      assertFalse(subscription.hasNext());
    }
  }
}
