"""The server's log: lines of text, or JSON objects one a line (`--log-format json`) for
log collectors. A request line (`--log-level debug`) carries its fields as such: method,
code, duration, peer, tenant, and the trace id when tracing.

With `--workers`, each worker's lines say which worker wrote them: `(worker 2, pid 4242)`
before the message, or the fields `worker` and `pid` in JSON.

Nothing secret reaches the log: API keys are never written (only the tenant's name), the
Redis URL is written without its password, and session ids and lock tokens appear in no
message (tests/test_logs.py runs a server that sees them all and reads every line).
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields a record may carry (logging's `extra=`), written as such in JSON.
FIELDS = ("method", "code", "duration_ms", "peer", "tenant", "messages", "trace_id")


class JsonFormatter(logging.Formatter):
    def __init__(self, constant: dict[str, object] | None = None) -> None:
        """`constant`: fields every line of this process carries (a worker's number)."""
        super().__init__()
        self.constant = constant or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.constant,
        }
        for field in FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, format: str, worker: int | None = None) -> None:
    """The root logger at `level`, writing `format` ("text" or "json") to stderr; in
    `worker` (its number, from 1), each line says so."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(
            JsonFormatter({} if worker is None else {"worker": worker, "pid": os.getpid()})
        )
    elif worker is None:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        who = f"(worker {worker}, pid {os.getpid()}) "
        handler.setFormatter(
            logging.Formatter(TEXT_FORMAT.replace("%(message)s", who + "%(message)s"))
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # gRPC's own debug lines (event-loop bookkeeping) would drown the per-request lines.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.root.level))
