package patterns

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	sessionv1 "github.com/patterns-server/patterns-server/clients/go/patterns/session/v1"
)

// Sessions is the Sessions service: sliding expiry, a per-user index, a cap per user, log
// out everywhere, rotation.
type Sessions struct {
	c    *Client
	stub sessionv1.SessionsClient
}

// Session is a session; times are from the Redis clock. Keep ID secret.
type Session struct {
	ID         string
	UserID     string
	Attributes map[string]string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

func session(m *sessionv1.Session) Session {
	return Session{
		ID: m.GetId(), UserID: m.GetUserId(), Attributes: m.GetAttributes(),
		CreatedAt: m.GetCreatedAt().AsTime(), LastSeenAt: m.GetLastSeenAt().AsTime(),
		ExpiresAt: m.GetExpiresAt().AsTime(),
	}
}

// SessionList is a page of a user's sessions (newest first), how many live sessions it
// has, and the token of the next page ("" after the last).
type SessionList struct {
	Sessions      []Session
	Total         uint64
	NextPageToken string
}

// NewSession is what Create starts: UserID's session ending TTL after its last touch,
// with Attributes; beyond MaxPerUser (0: the server's default), the user's sessions that
// would end soonest end.
type NewSession struct {
	UserID     string
	TTL        time.Duration
	Attributes map[string]string
	MaxPerUser uint32
}

// Create starts a session.
func (r *Sessions) Create(ctx context.Context, s NewSession) (Session, error) {
	request := &sessionv1.CreateRequest{
		UserId: s.UserID, Ttl: durationpb.New(s.TTL), Attributes: s.Attributes, MaxPerUser: s.MaxPerUser,
	}
	response, err := call(ctx, r.c, r.stub.Create, request)
	if err != nil {
		return Session{}, err
	}
	return session(response.GetSession()), nil
}

// Get is the session, and whether it lives (false when it ended, or never was).
func (r *Sessions) Get(ctx context.Context, id string) (Session, bool, error) {
	return r.get(ctx, id, false)
}

// Touch is Get that also slides the session's end to its ttl from now.
func (r *Sessions) Touch(ctx context.Context, id string) (Session, bool, error) {
	return r.get(ctx, id, true)
}

func (r *Sessions) get(ctx context.Context, id string, touch bool) (Session, bool, error) {
	response, err := call(ctx, r.c, r.stub.Get, &sessionv1.GetRequest{Id: id, Touch: touch})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code == codes.NotFound {
			return Session{}, false, nil
		}
		return Session{}, false, err
	}
	return session(response.GetSession()), true, nil
}

// Update sets and removes attributes, atomically; the session after. NOT_FOUND when the
// session has ended.
func (r *Sessions) Update(ctx context.Context, id string, set map[string]string, remove []string) (Session, error) {
	response, err := call(ctx, r.c, r.stub.Update, &sessionv1.UpdateRequest{Id: id, Set: set, Remove: remove})
	if err != nil {
		return Session{}, err
	}
	return session(response.GetSession()), nil
}

// Destroy ends a session; whether there was one.
func (r *Sessions) Destroy(ctx context.Context, id string) (bool, error) {
	response, err := call(ctx, r.c, r.stub.Destroy, &sessionv1.DestroyRequest{Id: id})
	return response.GetDestroyed(), err
}

// List is a page of the user's live sessions, newest first: up to limit (0: 100) from the
// newest, or after the page whose NextPageToken is pageToken; and the total. A page can
// hold fewer than limit while more follow: page until NextPageToken is "".
func (r *Sessions) List(ctx context.Context, userID string, limit uint32, pageToken string) (SessionList, error) {
	request := &sessionv1.ListRequest{UserId: userID, Limit: limit, PageToken: pageToken}
	response, err := call(ctx, r.c, r.stub.List, request)
	if err != nil {
		return SessionList{}, err
	}
	list := SessionList{Total: response.GetTotal(), NextPageToken: response.GetNextPageToken()}
	for _, s := range response.GetSessions() {
		list.Sessions = append(list.Sessions, session(s))
	}
	return list, nil
}

// DestroyAll ends every session of the user but exceptID ("" for none); how many. The
// server ends them 500 at a time: after a failure part way, call again to end the rest.
func (r *Sessions) DestroyAll(ctx context.Context, userID, exceptID string) (uint64, error) {
	response, err := call(ctx, r.c, r.stub.DestroyAll, &sessionv1.DestroyAllRequest{UserId: userID, ExceptId: exceptID})
	return response.GetDestroyed(), err
}

// Rotate is the same session under a new id (the old one is dead); NOT_FOUND when it has
// ended.
func (r *Sessions) Rotate(ctx context.Context, id string) (Session, error) {
	response, err := call(ctx, r.c, r.stub.Rotate, &sessionv1.RotateRequest{Id: id})
	if err != nil {
		return Session{}, err
	}
	return session(response.GetSession()), nil
}
