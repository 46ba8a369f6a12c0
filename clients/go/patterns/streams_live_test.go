package patterns_test

// Streams against a live patterns-server (PATTERNS_TARGET), as live_test.go.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/patterns-server/patterns-server/clients/go/patterns"
)

// appendN appends n entries "0".."n-1" to stream.
func appendN(t *testing.T, streams *patterns.Streams, stream string, n int) {
	t.Helper()
	for i := range n {
		if _, err := streams.Append(context.Background(), stream, []byte(fmt.Sprint(i)), patterns.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// consume opens a consumer and waits until the server confirms it.
func consume(t *testing.T, streams *patterns.Streams, opts patterns.ConsumeOptions) *patterns.Consumer {
	t.Helper()
	consumer := streams.Consume(context.Background(), opts)
	t.Cleanup(func() { consumer.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := consumer.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	return consumer
}

// next is the consumer's next message, failing after a generous deadline.
func next(t *testing.T, consumer *patterns.Consumer) *patterns.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	message, err := consumer.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return message
}

func TestEachEntryReachesOneConsumerOfEachGroup(t *testing.T) {
	streams := live(t).Streams()
	stream, n := fresh("orders"), 200
	open := func(group, name string) *patterns.Consumer {
		return consume(t, streams, patterns.ConsumeOptions{
			Stream: stream, Group: group, Consumer: name, Start: patterns.StartEarliest, MaxInFlight: 20,
		})
	}
	workers := []*patterns.Consumer{open("billing", "a"), open("billing", "b")}
	audit := open("audit", "a")
	appendN(t, streams, stream, n)

	var mu sync.Mutex
	handled := map[string]int{} // payload -> times, across billing's two consumers
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for _, worker := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				message, err := worker.Next(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				handled[string(message.Payload)]++
				mu.Unlock()
				if err := message.Ack(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	audited := map[string]bool{}
	for len(audited) < n {
		message := next(t, audit)
		audited[string(message.Payload)] = true
		if err := message.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "billing has every entry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n
	})
	// Every ack applied: nothing pending, so nothing will be delivered again.
	eventually(t, "every entry acknowledged", func() bool {
		info, err := streams.Info(context.Background(), stream)
		if err != nil || len(info.Groups) != 2 {
			return false
		}
		return info.Groups[0].Pending == 0 && info.Groups[1].Pending == 0
	})
	cancel()
	wg.Wait()
	for i := range n {
		if times := handled[fmt.Sprint(i)]; times != 1 {
			t.Errorf("entry %d handled %d times", i, times)
		}
	}
	info := must[patterns.StreamInfo](t)(streams.Info(context.Background(), stream))
	if !info.Exists || info.Length != uint64(n) {
		t.Errorf("info: %+v", info)
	}
	page := must[[]patterns.StreamEntry](t)(streams.Read(context.Background(), stream, patterns.ReadOptions{Limit: 10}))
	if len(page) != 10 || string(page[0].Payload) != "0" {
		t.Errorf("the first page: %+v", page)
	}
	rest := must[[]patterns.StreamEntry](t)(streams.Read(context.Background(), stream,
		patterns.ReadOptions{AfterID: page[9].ID, Limit: 1000}))
	if len(rest) != n-10 || string(rest[0].Payload) != "10" {
		t.Errorf("after the first page: %d entries", len(rest))
	}
}

func TestUnackedAndNackedMessagesComeBack(t *testing.T) {
	streams := live(t).Streams()
	stream := fresh("orders")
	consumer := consume(t, streams, patterns.ConsumeOptions{
		Stream: stream, Group: "g", Consumer: "a", AckTimeout: 300 * time.Millisecond,
	})
	appendN(t, streams, stream, 2)
	first, second := next(t, consumer), next(t, consumer)
	if first.DeliveryCount != 1 || string(first.Payload) != "0" || string(second.Payload) != "1" {
		t.Fatalf("the first deliveries: %+v %+v", first, second)
	}
	if err := second.Nack(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// first is left unacknowledged: after the ack timeout it comes back too.
	seen := map[string]uint32{}
	for len(seen) < 2 {
		message := next(t, consumer)
		seen[string(message.Payload)] = message.DeliveryCount
		if message.FirstDeliveredAt.IsZero() {
			t.Errorf("no first delivery time: %+v", message)
		}
		if err := message.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if seen["0"] != 2 || seen["1"] != 2 {
		t.Errorf("redeliveries: %v", seen)
	}
	var e *patterns.Error
	if err := first.Nack(time.Hour); !errors.As(err, &e) || e.CodeName() != "INVALID_ARGUMENT" {
		t.Errorf("a nack beyond the ack timeout: %v", err)
	}
}

func TestAnIdempotentAppendAppendsOnce(t *testing.T) {
	ctx, streams := context.Background(), live(t).Streams()
	stream := fresh("orders")
	opts := patterns.AppendOptions{Headers: map[string]string{"kind": "paid"}, IdempotencyKey: "order-1"}
	first := must[patterns.Appended](t)(streams.Append(ctx, stream, []byte("x"), opts))
	again := must[patterns.Appended](t)(streams.Append(ctx, stream, []byte("y"), opts))
	if first.Duplicate || !again.Duplicate || again.ID != first.ID {
		t.Errorf("appends: %+v %+v", first, again)
	}
	entries := must[[]patterns.StreamEntry](t)(streams.Read(ctx, stream, patterns.ReadOptions{}))
	if len(entries) != 1 || entries[0].Headers["kind"] != "paid" || string(entries[0].Payload) != "x" {
		t.Errorf("entries: %+v", entries)
	}
	if deleted := must[uint64](t)(streams.SetRetention(ctx, stream, patterns.Retention{MaxLen: 1000})); deleted != 0 {
		t.Errorf("the retention deleted %d", deleted)
	}
	info := must[patterns.StreamInfo](t)(streams.Info(ctx, stream))
	if info.Retention.MaxLen != 1000 {
		t.Errorf("the retention: %+v", info.Retention)
	}
	must[uint64](t)(streams.Trim(ctx, stream, patterns.Retention{MaxAge: time.Hour}))
	if must[bool](t)(streams.DeleteGroup(ctx, stream, "none")) {
		t.Error("deleted a group that did not exist")
	}
	var e *patterns.Error
	if _, err := streams.Append(ctx, "", nil, patterns.AppendOptions{}); !errors.As(err, &e) || e.CodeName() != "INVALID_ARGUMENT" {
		t.Errorf("an empty stream name: %v", err)
	}
}

func TestCloseEndsTheConsumer(t *testing.T) {
	streams := live(t).Streams()
	stream := fresh("orders")
	consumer := consume(t, streams, patterns.ConsumeOptions{Stream: stream, Group: "g", Consumer: "a"})
	appendN(t, streams, stream, 1)
	message := next(t, consumer)
	if err := message.Ack(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { consumer.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := consumer.Next(context.Background()); !errors.Is(err, patterns.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	if err := message.Ack(); !errors.Is(err, patterns.ErrConsumerClosed) {
		t.Errorf("Ack after Close: %v", err)
	}
	// The ack given before Close was written before the stream ended.
	info := must[patterns.StreamInfo](t)(streams.Info(context.Background(), stream))
	if len(info.Groups) != 1 || info.Groups[0].Pending != 0 {
		t.Errorf("after Close: %+v", info.Groups)
	}
}

func TestAConsumerEndsWhenItsGroupIsDeleted(t *testing.T) {
	streams := live(t).Streams()
	stream := fresh("orders")
	consumer := consume(t, streams, patterns.ConsumeOptions{Stream: stream, Group: "g", Consumer: "a"})
	if !must[bool](t)(streams.DeleteGroup(context.Background(), stream, "g")) {
		t.Fatal("the group was not deleted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := consumer.Next(ctx)
	var e *patterns.Error
	if !errors.As(err, &e) || e.Reason != "GROUP_DELETED" {
		t.Errorf("after DeleteGroup: %v", err)
	}
}

func TestAConsumerReopensAfterACutAndTheUnackedComeBack(t *testing.T) {
	streams := live(t).Streams()
	proxy := newCuttable(t, os.Getenv("PATTERNS_TARGET"))
	client := clientOf(t, proxy.listener.Addr().String())
	stream := fresh("orders")
	consumer := consume(t, client.Streams(), patterns.ConsumeOptions{
		Stream: stream, Group: "g", Consumer: "a", AckTimeout: 300 * time.Millisecond,
	})
	appendN(t, streams, stream, 3)
	for range 3 {
		next(t, consumer) // delivered, never acknowledged
	}
	proxy.cut()
	seen := map[string]uint32{}
	for len(seen) < 3 {
		message := next(t, consumer)
		seen[string(message.Payload)] = message.DeliveryCount
		if err := message.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	for _, payload := range []string{"0", "1", "2"} {
		if seen[payload] != 2 {
			t.Errorf("entry %s came back as delivery %d", payload, seen[payload])
		}
	}
	eventually(t, "the acks after the cut applied", func() bool {
		info, err := streams.Info(context.Background(), stream)
		return err == nil && len(info.Groups) == 1 && info.Groups[0].Pending == 0
	})
}
