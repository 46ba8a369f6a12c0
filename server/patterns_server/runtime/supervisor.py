"""`--workers N`: N server processes on one port, and this process supervising them.

Each worker is the server itself (`app.run`, started as `patterns-server worker`): its own
event loop, gRPC server, Redis connections and batcher, Pub/Sub hub, health and limits.
They listen on the same address with SO_REUSEPORT, and the kernel spreads new connections
among them by a hash of each connection's addresses: a connection (a client's channel)
stays with the worker that took it. The supervisor serves no calls. It

- reserves the port: it binds it alone first, so that a port anything else listens on fails
  at start as it does for one server (and a port 0 becomes the one the kernel chose), then
  keeps a socket bound there with SO_REUSEPORT, never listening (it takes no connection),
  so that no other program takes the port while workers come and go;
- starts the embedded Redis (no `--redis-url`) once, and gives every worker its URL;
- starts the first worker alone (a setting that cannot serve fails once, not N times),
  then the others, and says "listening on" once every one listens; if one cannot start,
  it stops the rest and exits 1;
- starts a worker that exits in its place, after a pause of 0.5 s that doubles (to 10 s)
  while they keep exiting within STABLE_SECONDS of their start; each exit is logged;
- passes SIGHUP on (the auth file and TLS files read again); on SIGTERM or SIGINT, sends
  SIGTERM to every worker, which shuts down gracefully (`App.stop`), and exits once all
  are gone: 0 when each ended cleanly;
- serves `--metrics-listen`: the sum of what the workers count (`metrics.workers_registry`).

A worker stops when the supervisor is gone, however it died (`runtime/worker.py`).

The workers are new processes running this package (`subprocess`), not `multiprocessing`'s:
a worker then starts exactly as a single server does, from a fresh interpreter, with
nothing inherited from this process beyond its environment and one socket; nothing is
pickled, and no `__main__` is imported again (spawn's way), nor is a helper process kept
(forkserver's). Its settings travel in its environment, not its arguments, which `ps`
shows to every user of the machine (a Redis URL may hold a password).
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from patterns_server.core.settings import Settings
from patterns_server.runtime import metrics
from patterns_server.runtime.auth import warn_if_open
from patterns_server.runtime.serving import ListenError
from patterns_server.runtime.worker import READY, Worker
from patterns_server.storage.backend import redacted_url
from patterns_server.storage.embedded import EmbeddedRedis, data_directory

logger = logging.getLogger("patterns_server")

FIRST_PAUSE = 0.5  # before a worker that exited is started again; doubles while they crash
LONGEST_PAUSE = 10.0
STABLE_SECONDS = 30.0  # a worker that ran this long was not crashing: the pause starts over
START_TIMEOUT = 60.0  # for a worker to listen
STOP_MARGIN = 10.0  # beyond --shutdown-grace, before a worker still running is killed


@dataclass
class _Process:
    number: int
    process: asyncio.subprocess.Process
    control: socket.socket  # the supervisor's end; the worker stops when it closes
    started: float
    ready: bool = False


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.running: dict[int, _Process] = {}
        self._worker_settings = settings
        self._metrics_directory = ""

    def stop(self) -> None:
        self.stopping.set()

    def reload(self) -> None:
        """SIGHUP, passed on to the workers that listen (one still starting reads the files
        anew as it starts; a SIGHUP before its handler is set would end it)."""
        for worker in self.running.values():
            if worker.ready:
                _signal(worker, signal.SIGHUP)

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT: the exit status."""
        holder, listen = reserve(self.settings.listen)
        embedded = None
        stop_metrics: Callable[[], None] | None = None
        try:
            redis_url = self.settings.redis_url
            if not redis_url:
                data = data_directory(self.settings.embedded_dir)
                embedded = EmbeddedRedis(data, optional=not self.settings.embedded_dir)
                # From this thread, which lives as long as the process: the embedded Redis
                # is told to exit when the thread that started it does (PR_SET_PDEATHSIG).
                redis_url = embedded.start()
            self._worker_settings = dataclasses.replace(
                self.settings, workers=1, listen=listen, redis_url=redis_url, metrics_listen=""
            )
            if self.settings.metrics_listen:
                self._metrics_directory = tempfile.mkdtemp(prefix="patterns-metrics-")
                stop_metrics = self._serve_metrics()
            if not await self._start_all():
                await self._stop_all([])
                return 1
            if self.stopping.is_set():
                return await self._stop_all([])
            logger.info(
                "listening on %s with %d workers (Redis %s)",
                listen,
                self.settings.workers,
                "embedded" if embedded else redacted_url(redis_url),
            )
            if not self.settings.auth_file:
                warn_if_open(listen, int(listen.rpartition(":")[2]))
            keepers = [
                asyncio.create_task(self._keep(worker)) for worker in list(self.running.values())
            ]
            await self.stopping.wait()
            return await self._stop_all(keepers)
        finally:
            for worker in list(self.running.values()):  # only when something failed
                _signal(worker, signal.SIGKILL)
                await worker.process.wait()
                self._gone(worker)
            if stop_metrics is not None:
                await asyncio.to_thread(stop_metrics)
            if self._metrics_directory:
                shutil.rmtree(self._metrics_directory, ignore_errors=True)
            if embedded is not None:
                embedded.stop()
            holder.close()

    async def _start_all(self) -> bool:
        """The first worker, then the others: whether all of them listen."""
        if not await self._ready(await self._spawn(1)):
            return False
        others = [await self._spawn(number) for number in range(2, self.settings.workers + 1)]
        return all(await asyncio.gather(*(self._ready(worker) for worker in others)))

    async def _spawn(self, number: int) -> _Process:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        worker = Worker(
            number, self._worker_settings, theirs.fileno(), bool(self._metrics_directory)
        )
        environment = {**os.environ, **worker.environment()}
        if self._metrics_directory:
            environment["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_directory
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "patterns_server",
                "worker",
                str(number),
                stdin=subprocess.DEVNULL,
                env=environment,
                pass_fds=(theirs.fileno(),),
                # Its own process group: a Ctrl-C in a terminal reaches the supervisor
                # alone, which stops the workers in order.
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        started = _Process(number, process, ours, asyncio.get_running_loop().time())
        self.running[number] = started
        return started

    async def _ready(self, worker: _Process) -> bool:
        """Wait until `worker` listens: False if it exited (or hung) first."""
        loop = asyncio.get_running_loop()
        said = asyncio.ensure_future(loop.sock_recv(worker.control, len(READY)))
        exited = asyncio.ensure_future(worker.process.wait())
        done, _ = await asyncio.wait(
            {said, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        said.cancel()
        exited.cancel()
        if said in done and said.exception() is None and said.result() == READY:
            worker.ready = True
            return True
        if not done:
            logger.error("worker %d did not listen within %gs", worker.number, START_TIMEOUT)
            _signal(worker, signal.SIGKILL)
        code = await self._wait(worker)
        logger.error(
            "worker %d (pid %d) did not start: it %s",
            worker.number,
            worker.process.pid,
            _exit(code),
        )
        return False

    async def _keep(self, worker: _Process) -> int:
        """Keep worker `worker.number` running until the supervisor stops: the exit status
        of its last process."""
        loop = asyncio.get_running_loop()
        pause = FIRST_PAUSE
        while True:
            code = await self._wait(worker)
            if self.stopping.is_set():
                return code
            ran = loop.time() - worker.started
            if ran >= STABLE_SECONDS:
                pause = FIRST_PAUSE
            if worker.ready:  # else its failure to start is logged already
                logger.warning(
                    "worker %d (pid %d) %s after %.1fs",
                    worker.number,
                    worker.process.pid,
                    _exit(code),
                    ran,
                )
            logger.warning("starting worker %d again in %gs", worker.number, pause)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return 0
            pause = min(2 * pause, LONGEST_PAUSE)
            try:
                worker = await self._spawn(worker.number)
            except OSError as error:  # no process to be had (out of memory, of pids)
                logger.error("cannot start worker %d: %s", worker.number, error)
                continue  # waits for the exited one again (at once), and pauses longer
            if self.stopping.is_set():  # came while it was being started
                _signal(worker, signal.SIGTERM)
            elif await self._ready(worker):
                logger.info("worker %d started again (pid %d)", worker.number, worker.process.pid)

    async def _wait(self, worker: _Process) -> int:
        """Wait for `worker` to exit: its exit status."""
        code = await worker.process.wait()
        self._gone(worker)
        return code

    async def _stop_all(self, keepers: "list[asyncio.Task[int]]") -> int:
        """SIGTERM to every worker; wait for them all (killing those that outlast the
        grace period by STOP_MARGIN): 0 if each ended cleanly, else 1."""
        if self.running:
            logger.info(
                "stopping %d workers: each drains its calls for up to %.1fs",
                len(self.running),
                self.settings.shutdown_grace,
            )
        for worker in self.running.values():
            _signal(worker, signal.SIGTERM)
        waiting = keepers or [
            asyncio.ensure_future(self._wait(worker)) for worker in self.running.values()
        ]
        if not waiting:
            return 0
        done, late = await asyncio.wait(waiting, timeout=self.settings.shutdown_grace + STOP_MARGIN)
        for worker in self.running.values():
            logger.error(
                "worker %d (pid %d) did not stop: killed", worker.number, worker.process.pid
            )
            _signal(worker, signal.SIGKILL)
        codes = [task.result() for task in done]
        if late:
            await asyncio.wait(late)
        # A worker ended by SIGTERM before it had set its handler (it was starting) is clean.
        clean = not late and all(code in (0, -signal.SIGTERM) for code in codes)
        logger.info("stopped" if clean else "stopped, not cleanly")
        return 0 if clean else 1

    def _gone(self, worker: _Process) -> None:
        """`worker` has exited (and been waited for)."""
        if self.running.get(worker.number) is not worker:
            return
        del self.running[worker.number]
        worker.control.close()
        if self._metrics_directory:
            metrics.worker_gone(self._metrics_directory, worker.process.pid)

    def _serve_metrics(self) -> Callable[[], None]:
        def processes() -> dict[str, int]:
            pids = {str(n): worker.process.pid for n, worker in sorted(self.running.items())}
            return {"supervisor": os.getpid(), **pids}

        registry = metrics.workers_registry(self._metrics_directory, processes)
        try:
            port, stop = metrics.serve(self.settings.metrics_listen, registry)
        except OSError as error:
            raise ListenError(
                f"cannot serve metrics on {self.settings.metrics_listen}: {error}"
            ) from None
        host = self.settings.metrics_listen.rpartition(":")[0]
        logger.info("metrics on http://%s:%d/metrics", host, port)
        return stop


def reserve(listen: str) -> tuple[socket.socket, str]:
    """Reserve `listen` ("host:port") for the workers: the socket that holds it (bound with
    SO_REUSEPORT, not listening) and the address with its port (a port 0 chosen).
    ListenError if anything else listens there."""
    host, _, port = listen.rpartition(":")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, ValueError) as error:
        raise ListenError(f"cannot listen on {listen}: {error}") from None
    with socket.socket(family, kind, protocol) as alone:
        # As gRPC's own sockets: a port whose old connections linger (TIME_WAIT) is free.
        alone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            alone.bind(address)
        except OSError as error:
            raise ListenError(f"cannot listen on {listen}: {error.strerror}") from None
        chosen = alone.getsockname()[1]
    holder = socket.socket(family, kind, protocol)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((address[0], chosen, *address[2:]))
    except OSError as error:  # taken in the moment between the two
        holder.close()
        raise ListenError(f"cannot listen on {listen}: {error.strerror}") from None
    return holder, f"{host}:{chosen}"


def _signal(worker: _Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has exited (and been waited for)
        worker.process.send_signal(signum)


def _exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until SIGTERM or SIGINT: the exit status."""
    supervisor = Supervisor(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.stop)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    return await supervisor.run()
