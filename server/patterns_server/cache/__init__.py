"""Cache: values with expiry, batch reads, tag and prefix invalidation, fill leases."""
