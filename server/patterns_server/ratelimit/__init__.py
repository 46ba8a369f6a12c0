"""RateLimiter: five rate-limiting algorithms, exact under concurrency."""
