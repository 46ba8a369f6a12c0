package patterns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	cachev1 "github.com/patterns-server/patterns-server/clients/go/patterns/cache/v1"
	counterv1 "github.com/patterns-server/patterns-server/clients/go/patterns/counter/v1"
	eventsv1 "github.com/patterns-server/patterns-server/clients/go/patterns/events/v1"
	leaderboardv1 "github.com/patterns-server/patterns-server/clients/go/patterns/leaderboard/v1"
	lockv1 "github.com/patterns-server/patterns-server/clients/go/patterns/lock/v1"
	ratelimitv1 "github.com/patterns-server/patterns-server/clients/go/patterns/ratelimit/v1"
	sessionv1 "github.com/patterns-server/patterns-server/clients/go/patterns/session/v1"
	streamsv1 "github.com/patterns-server/patterns-server/clients/go/patterns/streams/v1"
)

// DefaultTimeout is the deadline a call gets when its context has none (WithTimeout
// changes it): the Python client's default too.
const DefaultTimeout = 5 * time.Second

// DefaultFallbackAfter is how long a recipe with a fallback (a fail-open check,
// GetOrCompute) waits for the server, all its calls together, before it falls back.
const DefaultFallbackAfter = 200 * time.Millisecond

// reconnect is how the client's connection comes back after the server went away: grpc-go's
// backoff, but at most LastBackoff between attempts (not 2 minutes), so that a server back
// from a restart is found as soon as a subscription's own backoff would try it.
var reconnect = grpc.ConnectParams{
	Backoff:           grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: LastBackoff},
	MinConnectTimeout: 20 * time.Second,
}

// Client is a connection to patterns-server, with one handle per service. It is safe for
// concurrent use: make one per process and share it. Close it when done.
type Client struct {
	conn     grpc.ClientConnInterface
	owned    *grpc.ClientConn // what Close closes: nil for a connection given by WithConn
	timeout  time.Duration
	callOpts []grpc.CallOption
	logger   *slog.Logger
	checks   *checkStream // nil with WithStreamChecks(false)

	rateLimiter *RateLimiter
	counter     *Counter
	events      *Events
	locks       *Locks
	cache       *Cache
	leaderboard *Leaderboard
	sessions    *Sessions
	streams     *Streams
}

// An Option configures NewClient.
type Option func(*settings)

type settings struct {
	timeout     time.Duration
	apiKey      string
	hasKey      bool
	tlsConfig   *tls.Config
	useTLS      bool
	caFile      string
	certFile    string
	keyFile     string
	conn        grpc.ClientConnInterface
	dialOptions []grpc.DialOption
	logger      *slog.Logger
	unaryChecks bool
}

// WithTimeout sets the deadline of a call whose context has none (DefaultTimeout, 5 s,
// unless set). A context with a deadline keeps its own: that is how one call gets a
// longer or shorter one.
func WithTimeout(d time.Duration) Option {
	return func(s *settings) { s.timeout = d }
}

// WithAPIKey sends key on every call and stream as "authorization: Bearer <key>". It is
// sent only over TLS: without WithTLS or WithTLSFiles (or transport credentials of your
// own in WithDialOptions) NewClient fails, since anyone on a plaintext path could read the
// key and call as its team. Surrounding spaces are trimmed (a key read from a file often
// ends with a newline).
func WithAPIKey(key string) Option {
	return func(s *settings) { s.apiKey, s.hasKey = strings.TrimSpace(key), true }
}

// WithTLS speaks TLS with config; nil trusts the system's roots.
func WithTLS(config *tls.Config) Option {
	return func(s *settings) { s.tlsConfig, s.useTLS = config, true }
}

// WithTLSFiles speaks TLS from PEM files, read by NewClient: caFile is the CA the
// server's certificate chains to ("" trusts the system's roots); certFile and keyFile are
// this client's certificate and private key, for a server that asks for one (mutual TLS;
// "" for none).
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(s *settings) {
		s.caFile, s.certFile, s.keyFile, s.useTLS = caFile, certFile, keyFile, true
	}
}

// WithConn makes the client over a connection made elsewhere (shared with other stubs,
// with interceptors of its own, ...): NewClient's target is then ignored, and Close
// leaves the connection open. WithAPIKey still applies, as a per-call credential that
// gRPC sends only over TLS; WithTLS, WithTLSFiles and WithDialOptions do not combine with it.
func WithConn(conn grpc.ClientConnInterface) Option {
	return func(s *settings) { s.conn = conn }
}

// WithDialOptions adds options to grpc.NewClient (interceptors, keepalive, a balancer,
// transport credentials of your own...), after the client's own, so they win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, opts...) }
}

// WithLogger sets where the recipes say what they did on their own (computed a value
// directly because the cache was unavailable, say): slog.Default() unless set.
func WithLogger(logger *slog.Logger) Option {
	return func(s *settings) { s.logger = logger }
}

// WithStreamChecks(false) makes RateLimiter.Check send a unary Check per call. By default
// (true) the checks of every goroutine go as messages of one RateLimiter.CheckStream that
// the client shares, which the server decides together in fewer Redis round trips: the
// same decisions and errors, for less of the server's CPU. See "Checks over one stream"
// in the client's documentation.
func WithStreamChecks(on bool) Option {
	return func(s *settings) { s.unaryChecks = !on }
}

// NewClient makes a client of the server at target ("host:port", or any gRPC target such
// as "dns:///patterns.internal:50051"). Like grpc.NewClient it connects lazily: a server
// that is down shows as the calls' UNAVAILABLE errors, not here. Plaintext unless
// WithTLS or WithTLSFiles.
func NewClient(target string, opts ...Option) (*Client, error) {
	s := settings{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&s)
	}
	if s.timeout <= 0 {
		return nil, errors.New("patterns: WithTimeout needs a positive duration")
	}
	if s.hasKey && s.apiKey == "" {
		return nil, errors.New("patterns: the API key is empty")
	}
	for _, r := range s.apiKey { // sent as a header; no message names the key, logs keep them
		if r < ' ' || r > '~' {
			return nil, errors.New("patterns: the API key must be printable ASCII")
		}
	}
	c := &Client{timeout: s.timeout, logger: s.logger}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if s.conn != nil {
		if s.useTLS || len(s.dialOptions) > 0 {
			return nil, errors.New("patterns: WithConn takes the connection as it is: no WithTLS, WithTLSFiles or WithDialOptions")
		}
		c.conn = s.conn
		if s.hasKey {
			c.callOpts = append(c.callOpts, grpc.PerRPCCredentials(bearer(s.apiKey)))
		}
	} else {
		transport := insecure.NewCredentials()
		if s.useTLS {
			config, err := tlsConfig(&s)
			if err != nil {
				return nil, err
			}
			transport = credentials.NewTLS(config)
		}
		dial := []grpc.DialOption{grpc.WithTransportCredentials(transport), grpc.WithConnectParams(reconnect)}
		if s.hasKey {
			dial = append(dial, grpc.WithPerRPCCredentials(bearer(s.apiKey)))
		}
		conn, err := grpc.NewClient(target, append(dial, s.dialOptions...)...)
		if err != nil {
			return nil, fmt.Errorf("patterns: %w", err)
		}
		c.conn, c.owned = conn, conn
	}
	rateLimiter := ratelimitv1.NewRateLimiterClient(c.conn)
	if !s.unaryChecks {
		c.checks = &checkStream{c: c, stub: rateLimiter}
	}
	c.rateLimiter = &RateLimiter{c: c, stub: rateLimiter}
	c.counter = &Counter{c: c, stub: counterv1.NewUniqueCounterClient(c.conn)}
	c.events = &Events{c: c, stub: eventsv1.NewEventsClient(c.conn)}
	c.locks = &Locks{c: c, stub: lockv1.NewLockerClient(c.conn)}
	c.cache = &Cache{c: c, stub: cachev1.NewCacheClient(c.conn)}
	c.leaderboard = &Leaderboard{c: c, stub: leaderboardv1.NewLeaderboardClient(c.conn)}
	c.sessions = &Sessions{c: c, stub: sessionv1.NewSessionsClient(c.conn)}
	c.streams = &Streams{c: c, stub: streamsv1.NewStreamsClient(c.conn)}
	return c, nil
}

// FromEnv makes a client from the PATTERNS_* environment variables, then opts:
// PATTERNS_TARGET (default "localhost:50051"), PATTERNS_API_KEY (WithAPIKey),
// PATTERNS_CA_FILE (turns TLS on, trusting that CA), PATTERNS_CERT_FILE and
// PATTERNS_KEY_FILE (a client certificate, for mutual TLS).
func FromEnv(opts ...Option) (*Client, error) {
	target := os.Getenv("PATTERNS_TARGET")
	if target == "" {
		target = "localhost:50051"
	}
	var env []Option
	if key := os.Getenv("PATTERNS_API_KEY"); key != "" {
		env = append(env, WithAPIKey(key))
	}
	if ca := os.Getenv("PATTERNS_CA_FILE"); ca != "" {
		env = append(env, WithTLSFiles(ca, os.Getenv("PATTERNS_CERT_FILE"), os.Getenv("PATTERNS_KEY_FILE")))
	}
	return NewClient(target, append(env, opts...)...)
}

func tlsConfig(s *settings) (*tls.Config, error) {
	if s.tlsConfig != nil {
		return s.tlsConfig, nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("patterns: the CA file: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("patterns: %s holds no PEM certificate", s.caFile)
		}
	}
	if (s.certFile == "") != (s.keyFile == "") {
		return nil, errors.New("patterns: a client certificate and its key go together")
	}
	if s.certFile != "" {
		pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
		if err != nil {
			return nil, fmt.Errorf("patterns: the client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// bearer sends an API key as "authorization: Bearer <key>" on every call and stream.
type bearer string

func (key bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(key)}, nil
}

// RequireTransportSecurity is true: gRPC refuses to send the key over plaintext.
func (bearer) RequireTransportSecurity() bool { return true }

// Close ends the client's stream of rate-limit checks and closes the connection the client
// opened (not one given by WithConn): calls and streams in progress end with CANCELED.
// Checks made after Close are unary calls (which fail CANCELED on a connection it closed).
func (c *Client) Close() error {
	if c.checks != nil {
		c.checks.close()
	}
	if c.owned == nil {
		return nil
	}
	return c.owned.Close()
}

// Conn is the client's connection, for other stubs over it (health, say). Calls made
// through it directly get neither the client's default deadline nor, with WithConn, its
// API key.
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// RateLimiter is the RateLimiter service.
func (c *Client) RateLimiter() *RateLimiter { return c.rateLimiter }

// Counter is the UniqueCounter service.
func (c *Client) Counter() *Counter { return c.counter }

// Events is the Events service.
func (c *Client) Events() *Events { return c.events }

// Locks is the Locker service.
func (c *Client) Locks() *Locks { return c.locks }

// Cache is the Cache service.
func (c *Client) Cache() *Cache { return c.cache }

// Leaderboard is the Leaderboard service.
func (c *Client) Leaderboard() *Leaderboard { return c.leaderboard }

// Sessions is the Sessions service.
func (c *Client) Sessions() *Sessions { return c.sessions }

// Streams is the Streams service.
func (c *Client) Streams() *Streams { return c.streams }

// unary calls method with the client's deadline when ctx has none (longer by extra, for a
// call that waits on the server: a lock's wait), or with budget when budget > 0 (a
// recipe's fallback budget, which ctx's own deadline may only shorten). Failures come
// back as *Error.
func unary[Req, Resp any](
	ctx context.Context, c *Client, method func(context.Context, Req, ...grpc.CallOption) (Resp, error),
	request Req, extra, budget time.Duration,
) (Resp, error) {
	ctx, cancel := c.callContext(ctx, extra, budget)
	defer cancel()
	response, err := method(ctx, request, c.callOpts...)
	return response, asError(err)
}

// callContext is ctx with the deadline of one call: the client's timeout (longer by extra)
// when ctx has none, or budget when budget > 0 (ctx's own deadline may only shorten it).
func (c *Client) callContext(ctx context.Context, extra, budget time.Duration) (context.Context, context.CancelFunc) {
	switch _, has := ctx.Deadline(); {
	case budget > 0:
		return context.WithTimeout(ctx, budget)
	case !has:
		return context.WithTimeout(ctx, c.timeout+extra)
	}
	return ctx, func() {}
}

// call is unary with the client's deadline.
func call[Req, Resp any](
	ctx context.Context, c *Client, method func(context.Context, Req, ...grpc.CallOption) (Resp, error), request Req,
) (Resp, error) {
	return unary(ctx, c, method, request, 0, 0)
}
