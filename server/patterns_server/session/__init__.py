"""Sessions: sliding expiry, a per-user index, a cap per user, log out everywhere, rotation."""
