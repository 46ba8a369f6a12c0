"""The host: what serves the services over gRPC. Admission of calls (`calls`), errors as
statuses and the request log (`guard`), registering a service's methods (`serving`), and
reflection with the contract's comments (`reflection`). `app.py` puts them together."""
