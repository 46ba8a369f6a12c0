package patterns

import (
	"context"

	"google.golang.org/grpc/codes"

	leaderboardv1 "github.com/patterns-server/patterns-server/clients/go/patterns/leaderboard/v1"
)

// Leaderboard is the Leaderboard service: scores, fair ranks for ties, pages, neighbours,
// and periodic boards. Its methods are on a Board: Leaderboard().Board("chess").
type Leaderboard struct {
	c    *Client
	stub leaderboardv1.LeaderboardClient
}

// Order is which scores rank first.
type Order = leaderboardv1.Order

// Period is when a periodic board starts afresh (UTC day, ISO week or month, Redis clock).
type Period = leaderboardv1.Period

// The orders and periods.
const (
	HighFirst     = leaderboardv1.Order_ORDER_HIGH_FIRST
	LowFirst      = leaderboardv1.Order_ORDER_LOW_FIRST
	PeriodNone    = leaderboardv1.Period_PERIOD_NONE
	PeriodDaily   = leaderboardv1.Period_PERIOD_DAILY
	PeriodWeekly  = leaderboardv1.Period_PERIOD_WEEKLY
	PeriodMonthly = leaderboardv1.Period_PERIOD_MONTHLY
)

// Board is one board (make it with Leaderboard.Board): its name, order (HighFirst unless
// set) and period (PeriodNone unless set). Previous reads the period before the current
// one (still kept for a period); a submission to it fails with INVALID_ARGUMENT from the
// client.
type Board struct {
	lb       *Leaderboard
	Name     string
	Order    Order
	Period   Period
	Previous bool
}

// Board is the board name, highest scores first, without a period; set the returned
// Board's Order, Period or Previous for another kind.
func (l *Leaderboard) Board(name string) *Board {
	return &Board{lb: l, Name: name, Order: HighFirst, Period: PeriodNone}
}

func (b *Board) offset() int32 {
	if b.Previous {
		return -1
	}
	return 0
}

// Standing is a member's place on a board: ties share a rank (1, 2, 2, 4).
type Standing struct {
	Member string
	Score  float64
	Rank   uint64
}

// Submitted is a submission's result: the member's score and rank after it, and whether
// the score changed.
type Submitted struct {
	Score   float64
	Rank    uint64
	Updated bool
}

// Page is a page of standings, best first, and how many members the board has.
type Page struct {
	Standings []Standing
	Total     uint64
}

func (b *Board) submit(ctx context.Context, member string, score float64, mode leaderboardv1.Mode) (Submitted, error) {
	if b.Previous {
		return Submitted{}, &Error{Code: codes.InvalidArgument, Message: "submissions go to the current period: this Board has Previous set"}
	}
	request := &leaderboardv1.SubmitRequest{
		Board: b.Name, Member: member, Score: score, Mode: mode, Order: b.Order, Period: b.Period,
	}
	response, err := call(ctx, b.lb.c, b.lb.stub.Submit, request)
	if err != nil {
		return Submitted{}, err
	}
	return Submitted{Score: response.GetScore(), Rank: response.GetRank(), Updated: response.GetUpdated()}, nil
}

// Submit sets member's score.
func (b *Board) Submit(ctx context.Context, member string, score float64) (Submitted, error) {
	return b.submit(ctx, member, score, leaderboardv1.Mode_MODE_SET)
}

// Increment adds by to member's score (0 for a new member).
func (b *Board) Increment(ctx context.Context, member string, by float64) (Submitted, error) {
	return b.submit(ctx, member, by, leaderboardv1.Mode_MODE_INCREMENT)
}

// SubmitBest keeps the better of member's score and score.
func (b *Board) SubmitBest(ctx context.Context, member string, score float64) (Submitted, error) {
	return b.submit(ctx, member, score, leaderboardv1.Mode_MODE_BEST)
}

// Rank is member's standing, and whether it is on the board.
func (b *Board) Rank(ctx context.Context, member string) (Standing, bool, error) {
	request := &leaderboardv1.GetRankRequest{
		Board: b.Name, Member: member, Order: b.Order, Period: b.Period, PeriodOffset: b.offset(),
	}
	response, err := call(ctx, b.lb.c, b.lb.stub.GetRank, request)
	if err != nil || !response.GetFound() {
		return Standing{}, false, err
	}
	return Standing{Member: member, Score: response.GetScore(), Rank: response.GetRank()}, true, nil
}

// Top is a page of up to limit standings from offset, best first, and the board's size.
func (b *Board) Top(ctx context.Context, limit uint32, offset uint64) (Page, error) {
	request := &leaderboardv1.TopRequest{
		Board: b.Name, Limit: limit, Offset: offset, Order: b.Order, Period: b.Period, PeriodOffset: b.offset(),
	}
	response, err := call(ctx, b.lb.c, b.lb.stub.Top, request)
	if err != nil {
		return Page{}, err
	}
	return Page{Standings: standings(response.GetEntries()), Total: response.GetTotal()}, nil
}

// Around is member and up to radius standings on each side; empty when it is absent.
func (b *Board) Around(ctx context.Context, member string, radius uint32) ([]Standing, error) {
	request := &leaderboardv1.AroundRequest{
		Board: b.Name, Member: member, Radius: radius, Order: b.Order, Period: b.Period, PeriodOffset: b.offset(),
	}
	response, err := call(ctx, b.lb.c, b.lb.stub.Around, request)
	return standings(response.GetEntries()), err
}

// Remove takes members off; how many were on.
func (b *Board) Remove(ctx context.Context, members ...string) (uint64, error) {
	request := &leaderboardv1.RemoveRequest{
		Board: b.Name, Members: members, Order: b.Order, Period: b.Period, PeriodOffset: b.offset(),
	}
	response, err := call(ctx, b.lb.c, b.lb.stub.Remove, request)
	return response.GetRemoved(), err
}

// Size is how many members the board has.
func (b *Board) Size(ctx context.Context) (uint64, error) {
	request := &leaderboardv1.SizeRequest{Board: b.Name, Order: b.Order, Period: b.Period, PeriodOffset: b.offset()}
	response, err := call(ctx, b.lb.c, b.lb.stub.Size, request)
	return response.GetCount(), err
}

func standings(entries []*leaderboardv1.Entry) []Standing {
	result := make([]Standing, 0, len(entries))
	for _, e := range entries {
		result = append(result, Standing{Member: e.GetMember(), Score: e.GetScore(), Rank: e.GetRank()})
	}
	return result
}
