"""Events: publish, and server-streaming subscribe over Redis Pub/Sub."""
