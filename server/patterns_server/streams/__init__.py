"""Streams: durable events on Redis Streams, with consumer groups, acknowledgements,
redelivery, dead letters and replay."""
