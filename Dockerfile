# syntax=docker/dockerfile:1
# patterns-server image: build in one stage, run slim and unprivileged in the next.
# It needs a Redis: set PATTERNS_REDIS_URL (docker-compose.yml does).

FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md VERSION LICENSE ./
COPY clients/python clients/python
COPY server server
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ./clients/python .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home patterns
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PATTERNS_LISTEN=0.0.0.0:50051
USER patterns
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["python", "-m", "patterns_server.healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["patterns-server"]
