"""What every servicer shares: the `Service` it is served as, the `Runtime` it is built
from, and conversions between the contract's messages and the patterns' Python values.

A `<pattern>/service.py` turns messages into pattern calls and answers into messages: it
is the only place where gRPC meets a pattern. It knows nothing of Redis keys, and the host
(`runtime/`, `app.py`) serves it: admission, errors as statuses, logs."""
