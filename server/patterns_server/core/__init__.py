"""What every layer uses and that uses none of them: the errors patterns raise (`errors`),
checks of names, counts and lengths of time (`validation`), and the server's settings
(`settings`). Plain Python: no gRPC, no Redis."""
