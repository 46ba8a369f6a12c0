"""The server's log: lines of text, or JSON objects one a line (`--log-format json`) for
log collectors. A request line (`--log-level debug`) carries its fields as such: method,
code, duration, peer, tenant, and the trace id when tracing.

Nothing secret reaches the log: API keys are never written (only the tenant's name), the
Redis URL is written without its password, and session ids and lock tokens appear in no
message (tests/test_logs.py runs a server that sees them all and reads every line).
"""

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields a record may carry (logging's `extra=`), written as such in JSON.
FIELDS = ("method", "code", "duration_ms", "peer", "tenant", "messages", "trace_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, format: str) -> None:
    """The root logger at `level`, writing `format` ("text" or "json") to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # gRPC's own debug lines (event-loop bookkeeping) would drown the per-request lines.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.root.level))
