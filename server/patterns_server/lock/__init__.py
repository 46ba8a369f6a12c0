"""Locker: leases with fencing tokens, waiting without polling, and a lock held by a stream."""
