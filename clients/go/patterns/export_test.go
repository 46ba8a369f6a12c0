package patterns

// ChecksInProgress is how many checks wait for the answers of c's stream of checks: the
// one look inside the client that the tests take, to know a check was sent.
func ChecksInProgress(c *Client) int {
	if c.checks == nil {
		return 0
	}
	return c.checks.inProgress()
}
