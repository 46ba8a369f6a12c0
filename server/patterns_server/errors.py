"""The error a pattern raises for the caller's mistakes: plain Python, no gRPC.

`rpc_errors` turns it (and Redis failures) into gRPC statuses; a pattern used without
gRPC raises it as an ordinary exception.
"""


class InvalidArgument(Exception):
    """The request breaks a documented limit: `field` is its path in the request
    (`checks[2].policy.limit`), `description` says what is wrong."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def under(self, parent: str) -> "InvalidArgument":
        """The same error, its field path nested under `parent` (for batch requests)."""
        return InvalidArgument(f"{parent}.{self.field}", self.description)
