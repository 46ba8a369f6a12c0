package patterns

import (
	"fmt"
	"testing"
	"time"
)

// Answers queued together go in as few messages as the contract allows: every ack in one
// (by 10,000 ids), the nacks of one delay in one; none is lost on the way back to the queue.
func TestAnswersGivenTogetherAreCoalesced(t *testing.T) {
	var batch []answer
	for i := range maxIDs + 1 {
		batch = append(batch, answer{id: fmt.Sprintf("%d-0", i)})
	}
	batch = append(batch,
		answer{id: "a", nack: true}, answer{id: "b", nack: true, delay: time.Second},
		answer{id: "c", nack: true})
	requests := coalesce(batch)
	if len(requests) != 4 {
		t.Fatalf("%d messages, not 4", len(requests))
	}
	if len(requests[0].GetAck().GetIds()) != maxIDs || len(requests[1].GetAck().GetIds()) != 1 {
		t.Errorf("acks: %d then %d", len(requests[0].GetAck().GetIds()), len(requests[1].GetAck().GetIds()))
	}
	if ids := requests[2].GetNack().GetIds(); len(ids) != 2 || ids[0] != "a" || ids[1] != "c" || requests[2].GetNack().GetDelay() != nil {
		t.Errorf("the nacks without delay: %v", requests[2])
	}
	if ids := requests[3].GetNack().GetIds(); len(ids) != 1 || requests[3].GetNack().GetDelay().AsDuration() != time.Second {
		t.Errorf("the nack with a delay: %v", requests[3])
	}
	if back := answersOf(requests); len(back) != len(batch) {
		t.Errorf("%d answers back from %d", len(back), len(batch))
	}
}
