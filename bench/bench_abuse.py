"""``/v1/health`` latency of a fresh ``privtune serve`` while unauthenticated clients abuse it.

One run (``python -m bench bench_abuse``: ~45 s, under 2 min even if the server stalls) writes
``bench/results/server_abuse-<cores>t.json``. A fresh server (own process, SQLite, loopback) is probed with
``GET /v1/health`` at ``PROBE_HZ`` (open loop: one new connection per probe, sent on schedule whether or not
earlier probes answered, each given ``PROBE_TIMEOUT_S``) in three phases:

1. **baseline**: ``BASELINE_S`` of probes, nothing else.
2. **abuse**: ``ABUSE_S`` of probes while these clients run concurrently, none holding a valid credential:
   ``admin_bodies`` (``POST /v1/admin/rounds`` and ``/v1/admin/devices`` with ``ADMIN_BODY_BYTES`` JSON
   bodies, no token or a wrong one), ``uploads`` (``UPLOAD_BODY_BYTES`` to ``/v1/rounds/0/updates``, signed
   for an enrolled device with the wrong secret), ``slowloris`` (sockets that send part of the headers, then
   one byte every ``SLOWLORIS_DRIBBLE_S``), ``huge_headers`` (``POST /v1/checkin`` with a
   ``HUGE_HEADER_BYTES`` ``X-Privtune-Device`` header) and ``idle`` (connections that send nothing).
   Every abusive request uses its own connection and ``Connection: close``; a closed socket is reopened.
3. **recovery**: ``RECOVERY_S`` of probes after every abusive socket was closed.

Per phase: latency percentiles of the answered (200) probes, the count that failed or took over ``SLOW_S``,
server CPU, peak server RSS (VmRSS sampled every ``RSS_SAMPLE_S``; VmHWM at the end), database growth
(file + WAL) and this process's own CPU (clients and server share the cores). Per abuse kind: outcomes
(HTTP status, closed by the server, connection error, timeout, still open/unfinished at the stop) and bytes
sent. The probes run on their own event loop in a thread, the abusers on another in the main thread.
The bundle is a server-only one (tokenizer + adapter + manifest, no ORT/ExecuTorch programs, ~7 s to build):
the server verifies and hashes it but never runs a model. Numbers are for reading, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import machine_info, write_result
from ondevice.auth import HEADER_DEVICE, signed_headers
from ondevice.bundle import MANIFEST_FILE
from ondevice.protocol import sha256_hex
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from server_aggregator.process import spawn_until_ready, stop_process

MIB = 1024 * 1024

BASELINE_S = 10.0
ABUSE_S = 20.0
RECOVERY_S = 5.0
PROBE_HZ = 20.0
PROBE_TIMEOUT_S = 10.0
SLOW_S = 1.0
RSS_SAMPLE_S = 0.25

ADMIN_CLIENTS = 2  # concurrent connections, each posting one body after another
ADMIN_BODY_BYTES = 50 * MIB
UPLOAD_CLIENTS = 2
UPLOAD_BODY_BYTES = 64 * MIB  # = the server's cap (ondevice.protocol.MAX_UPDATE_BYTES): read in full
SLOWLORIS_SOCKETS = 200
SLOWLORIS_DRIBBLE_S = 5.0
HUGE_HEADER_CLIENTS = 2
HUGE_HEADER_BYTES = 1_000_000
IDLE_SOCKETS = 500

REQUEST_TIMEOUT_S = 15.0  # an abusive request unanswered this long is dropped and counted as "timeout"
RECONNECT_PAUSE_S = 0.5
SEND_CHUNK = MIB
STOP_GRACE_S = 10.0
HOST = "127.0.0.1"
ADMIN_TOKEN = "bench-admin-token-" + "0" * 16
VICTIM_DEVICE = "abuse-victim"
HEALTH_REQUEST = f"GET /v1/health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- server


def server_bundle(scratch: Path) -> tuple[Path, Path]:
    """A server-only bundle (tokenizer, adapter, manifest) and the classifier folder it was exported from."""
    from export.bundle import _write_adapter, _write_tokenizer, build_manifest
    from export.bundle_types import ExportOptions
    from export.classifier import build_classifier

    clf = build_classifier(seed=0)
    bundle = scratch / "bundle"
    bundle.mkdir()
    files = [*_write_tokenizer(clf, bundle), _write_adapter(clf, bundle)]
    manifest = build_manifest(clf, ExportOptions(), bundle, files)
    (bundle / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    clf.save(scratch / "classifier")
    return bundle, scratch / "classifier"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int
    db_path: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_server(scratch: Path, bundle: Path, classifier: Path) -> Server:
    """``privtune serve`` on a free loopback port, ready once ``/v1/health`` answers."""
    port, db_path, log = free_port(), scratch / "state.db", scratch / "server.log"
    args = [
        sys.executable, "-c", "from privtune.cli import main; main()", "serve",
        "--db", f"sqlite:///{db_path}", "--adapter", str(classifier), "--bundle", str(bundle),
        "--publish-dir", str(scratch / "published"), "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "PRIVTUNE_ADMIN_TOKEN": ADMIN_TOKEN}
    process = spawn_until_ready(args, log=log, url=f"http://{HOST}:{port}", env=env, cwd=REPO_ROOT)
    return Server(process, port, db_path, log)


def enroll_victim(port: int) -> None:
    """Enroll the device whose id the upload abuser signs for (with a wrong secret)."""
    response = httpx.post(
        f"http://{HOST}:{port}/v1/admin/devices",
        json={"device_id": VICTIM_DEVICE},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (seconds); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def db_bytes(db_path: Path) -> int:
    """The database file plus its WAL and shared-memory files."""
    paths = (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm"))
    return sum(p.stat().st_size for p in paths if p.is_file())


def log_errors(log: Path) -> dict[str, Any]:
    """ERROR lines and tracebacks in the server log: counts and the first few distinct exception lines."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    exceptions, in_traceback = [], False
    for line in lines:
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            exceptions.append(line[:300])  # the exception that ends the traceback
            in_traceback = False
    return {
        "error_lines": sum("ERROR" in line for line in lines),
        "tracebacks": sum(line.startswith("Traceback") for line in lines),
        "distinct_exceptions": list(dict.fromkeys(exceptions))[:5],
    }


# --------------------------------------------------------------------------- raw HTTP


def request_head(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_name(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else f"conn_error:{type(exc).__name__}"


async def read_status(reader: asyncio.StreamReader, first: bytes = b"") -> str:
    """The status code of the response being read, or ``closed_by_server`` at EOF."""
    line = first + await reader.readline()
    if not line:
        return "closed_by_server"
    parts = line.split()
    return parts[1].decode("latin-1") if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else "garbled"


async def send_body(writer: asyncio.StreamWriter, head: bytes, body: bytes, tally: Tally) -> None:
    writer.write(head)
    view = memoryview(body)
    for start in range(0, len(body), SEND_CHUNK):
        chunk = view[start : start + SEND_CHUNK]
        writer.write(chunk)
        await writer.drain()
        tally.sent_bytes += len(chunk)


async def one_request(port: int, head: bytes, body: bytes, tally: Tally) -> None:
    """Send one request on a new connection while reading the answer (which may come before the body ends)."""
    writer: asyncio.StreamWriter | None = None
    sender: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(HOST, port)
            sender = asyncio.create_task(send_body(writer, head, body, tally))
            outcome = await read_status(reader)
    except asyncio.CancelledError:
        tally.add("unfinished_at_stop")
        raise
    except (OSError, TimeoutError) as exc:
        outcome = error_name(exc)
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        if writer is not None:
            writer.transport.abort()
    tally.add(outcome)


async def hold_open(port: int, prefix: bytes, dribble_s: float | None, tally: Tally) -> None:
    """Open a connection, send ``prefix``, then one byte every ``dribble_s`` (never if None) until it ends."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(HOST, port)
        tally.add("connected")
        writer.write(prefix)
        while True:
            try:
                first = await asyncio.wait_for(reader.read(1), dribble_s)
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
                continue
            outcome = await asyncio.wait_for(read_status(reader, first), REQUEST_TIMEOUT_S) if first else ""
            tally.add(f"answered:{outcome}" if first else "closed_by_server")
            return
    except asyncio.CancelledError:
        tally.add("open_at_stop" if writer is not None else "unfinished_at_stop")
        raise
    except (OSError, TimeoutError) as exc:
        tally.add(error_name(exc))
    finally:
        if writer is not None:
            writer.transport.abort()


# --------------------------------------------------------------------------- abusers


@dataclass
class Tally:
    """Outcomes of one abuse kind: HTTP status codes, closes, errors; and body bytes sent."""

    outcomes: Counter[str] = field(default_factory=Counter)
    sent_bytes: int = 0

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


async def forever(job: Callable[[int], Awaitable[None]], pause_s: float = 0.0) -> None:
    """``job(0)``, ``job(1)``, … until cancelled."""
    i = 0
    while True:
        await job(i)
        i += 1
        if pause_s:
            await asyncio.sleep(pause_s)


def admin_body() -> bytes:
    """ADMIN_BODY_BYTES of valid JSON: a known field plus a long array of zeros (costly to parse)."""
    prefix, suffix = b'{"device_id": "x", "pad": [0', b"]}"
    zeros = (ADMIN_BODY_BYTES - len(prefix) - len(suffix)) // 2
    return prefix + b",0" * zeros + suffix


def admin_job(port: int, body: bytes, tally: Tally) -> Callable[[int], Awaitable[None]]:
    paths = ("/v1/admin/rounds", "/v1/admin/devices")
    tokens: tuple[dict[str, str], ...] = ({}, {"Authorization": "Bearer wrong-token-" + "0" * 16})

    def job(i: int) -> Awaitable[None]:
        headers = {**tokens[(i // 2) % 2], "Content-Type": "application/json", "Content-Length": str(len(body))}
        return one_request(port, request_head("POST", paths[i % 2], headers), body, tally)

    return job


def upload_job(port: int, body: bytes, digest: str, tally: Tally) -> Callable[[int], Awaitable[None]]:
    """Well-formed uploads (right Idempotency-Key) for an enrolled device, signed with a wrong secret."""
    path = "/v1/rounds/0/updates"

    def job(_: int) -> Awaitable[None]:
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Length": str(len(body)),
            UPDATE_MAC_HEADER: "0" * 64,
            IDEMPOTENCY_HEADER: digest,
            **signed_headers(VICTIM_DEVICE, secrets.token_bytes(32), "POST", path, body),
        }
        return one_request(port, request_head("POST", path, headers), body, tally)

    return job


def huge_header_job(port: int, tally: Tally) -> Callable[[int], Awaitable[None]]:
    headers = {HEADER_DEVICE: "a" * HUGE_HEADER_BYTES, "Content-Type": "application/json", "Content-Length": "2"}
    head = request_head("POST", "/v1/checkin", headers)
    return lambda _: one_request(port, head, b"{}", tally)


@dataclass(frozen=True)
class Bodies:
    """Request bodies (and the upload's sha256, its Idempotency-Key) built before the abuse phase starts."""

    admin: bytes
    upload: bytes
    upload_sha256: str


def build_bodies() -> Bodies:
    upload = secrets.token_bytes(UPLOAD_BODY_BYTES)
    return Bodies(admin_body(), upload, sha256_hex(upload))


def abusers(port: int, tallies: Mapping[str, Tally], bodies: Bodies) -> list[Awaitable[None]]:
    """One coroutine per abusive connection slot, each running until cancelled."""
    slow_prefix = request_head("POST", "/v1/admin/rounds", {})[: -len(b"Connection: close\r\n\r\n")] + b"X-Slow: "
    return [
        *(forever(admin_job(port, bodies.admin, tallies["admin_bodies"])) for _ in range(ADMIN_CLIENTS)),
        *(
            forever(upload_job(port, bodies.upload, bodies.upload_sha256, tallies["uploads"]))
            for _ in range(UPLOAD_CLIENTS)
        ),
        *(forever(huge_header_job(port, tallies["huge_headers"])) for _ in range(HUGE_HEADER_CLIENTS)),
        *(
            forever(
                lambda _: hold_open(port, slow_prefix, SLOWLORIS_DRIBBLE_S, tallies["slowloris"]), RECONNECT_PAUSE_S
            )
            for _ in range(SLOWLORIS_SOCKETS)
        ),
        *(
            forever(lambda _: hold_open(port, b"", None, tallies["idle"]), RECONNECT_PAUSE_S)
            for _ in range(IDLE_SOCKETS)
        ),
    ]


async def abuse_for(port: int, duration_s: float, tallies: Mapping[str, Tally], bodies: Bodies) -> None:
    """Run every abuser for ``duration_s``, then cancel them all and wait until each socket is closed."""
    tasks = [asyncio.ensure_future(coro) for coro in abusers(port, tallies, bodies)]
    await asyncio.sleep(duration_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    latency_s: float
    outcome: str  # "200", another status, "timeout", "conn_error:<type>"


async def probe(port: int) -> Probe:
    """One ``GET /v1/health`` on a new connection, timed from connect to the end of the response."""
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(HEALTH_REQUEST)
            outcome = await read_status(reader)
            await reader.read()  # the rest, up to the server's close
    except (OSError, TimeoutError) as exc:
        outcome = error_name(exc)
    finally:
        if writer is not None:
            writer.transport.abort()
    return Probe(time.perf_counter() - start, outcome)


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = proc_status_kib(pid, "VmRSS")
        if rss is not None:
            samples.append(rss)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)


async def probe_for(port: int, pid: int, duration_s: float, rss_kib: list[int]) -> list[Probe]:
    """Probes at PROBE_HZ for ``duration_s`` (open loop), sampling the server's RSS meanwhile."""
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, rss_kib, stop))
    start, tasks = loop.time(), []
    for i in range(round(duration_s * PROBE_HZ)):
        await asyncio.sleep(max(0.0, start + i / PROBE_HZ - loop.time()))
        tasks.append(asyncio.create_task(probe(port)))
    probes = await asyncio.gather(*tasks)
    stop.set()
    await sampler
    return list(probes)


def latency_summary(probes: list[Probe]) -> dict[str, Any]:
    """Percentiles (ms) over answered probes; failures (not 200) and slow answers counted apart."""
    ok = np.asarray([p.latency_s for p in probes if p.outcome == "200"])
    failed = sum(p.outcome != "200" for p in probes)
    slow = int(np.sum(ok > SLOW_S)) if ok.size else 0
    pct = {f"p{q}": float(1000 * np.percentile(ok, q)) if ok.size else None for q in (50, 95, 99)}
    return {
        "probes": len(probes),
        "answered_200": int(ok.size),
        "failed": failed,
        f"slow_over_{SLOW_S:g}s": slow,
        "failed_or_slow": failed + slow,
        "latency_ms": {**pct, "max": float(1000 * ok.max()) if ok.size else None},
        "outcomes": dict(Counter(p.outcome for p in probes)),
    }


# --------------------------------------------------------------------------- phases


def run_phase(
    server: Server, duration_s: float, abuse: tuple[Mapping[str, Tally], Bodies] | None = None
) -> dict[str, Any]:
    """Probe for ``duration_s`` in a thread; meanwhile run the abusers here if ``abuse`` is given."""
    db_before, cpu_before, self_before = db_bytes(server.db_path), process_cpu_s(server.pid), self_cpu_s()
    rss_kib: list[int] = []
    probes: list[Probe] = []
    wall = time.perf_counter()
    prober = threading.Thread(
        target=lambda: probes.extend(asyncio.run(probe_for(server.port, server.pid, duration_s, rss_kib))),
        name="health-prober",
    )
    prober.start()
    try:
        if abuse is not None:
            asyncio.run(abuse_for(server.port, duration_s, *abuse))
    finally:
        prober.join()
    cpu_after = process_cpu_s(server.pid)
    return {
        "duration_s": duration_s,
        "wall_s": time.perf_counter() - wall,
        **latency_summary(probes),
        "server_cpu_s": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        "bench_process_cpu_s": self_cpu_s() - self_before,
        "server_peak_rss_mib": max(rss_kib) / 1024 if rss_kib else None,
        "server_vm_hwm_mib_at_end": _mib(proc_status_kib(server.pid, "VmHWM")),
        "db_bytes_before": db_before,
        "db_growth_bytes": db_bytes(server.db_path) - db_before,
        "server_alive_at_end": server.process.poll() is None,
    }


def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def params() -> dict[str, Any]:
    return {
        "baseline_s": BASELINE_S, "abuse_s": ABUSE_S, "recovery_s": RECOVERY_S, "probe_hz": PROBE_HZ,
        "probe_timeout_s": PROBE_TIMEOUT_S, "slow_s": SLOW_S, "admin_clients": ADMIN_CLIENTS,
        "admin_body_bytes": ADMIN_BODY_BYTES, "upload_clients": UPLOAD_CLIENTS,
        "upload_body_bytes": UPLOAD_BODY_BYTES, "slowloris_sockets": SLOWLORIS_SOCKETS,
        "slowloris_dribble_s": SLOWLORIS_DRIBBLE_S, "huge_header_clients": HUGE_HEADER_CLIENTS,
        "huge_header_bytes": HUGE_HEADER_BYTES, "idle_sockets": IDLE_SOCKETS,
        "request_timeout_s": REQUEST_TIMEOUT_S, "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "probe": "GET /v1/health on a new connection (Connection: close), open loop; latency = connect to end "
        "of response; percentiles over 200 answers only",
        "server": "`privtune serve` subprocess, default settings, server-only bundle, SQLite",
    }  # fmt: skip


def print_table(doc: Mapping[str, Any]) -> None:
    print(f"   {'phase':9s} {'probes':>6s} {'ok':>5s} {'bad':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} "
          f"{'max ms':>8s} {'peak RSS MiB':>12s} {'db +KiB':>8s} {'srv cpu s':>9s}")  # fmt: skip
    for name, phase in doc["phases"].items():
        lat = phase["latency_ms"]
        cells = " ".join(
            f"{'-' if lat[k] is None else format(lat[k], '.1f'):>8s}" for k in ("p50", "p95", "p99", "max")
        )
        rss = "-" if phase["server_peak_rss_mib"] is None else f"{phase['server_peak_rss_mib']:.0f}"
        print(f"   {name:9s} {phase['probes']:6d} {phase['answered_200']:5d} {phase['failed_or_slow']:4d} {cells} "
              f"{rss:>12s} {phase['db_growth_bytes'] / 1024:8.0f} {phase['server_cpu_s'] or 0:9.1f}")  # fmt: skip
    print(f"   ratios abuse/baseline: {doc['ratios_abuse_to_baseline']}")
    for kind, counts in doc["abuse"].items():
        print(f"   {kind:13s} {counts['outcomes']}  sent {counts['sent_bytes'] / MIB:.0f} MiB")


def measure(server: Server) -> dict[str, Any]:
    tallies = {k: Tally() for k in ("admin_bodies", "uploads", "slowloris", "huge_headers", "idle")}
    phases = {"baseline": run_phase(server, BASELINE_S)}
    print(f"   baseline done; abusing for {ABUSE_S:g} s", flush=True)
    phases["abuse"] = run_phase(server, ABUSE_S, (tallies, build_bodies()))
    phases["recovery"] = run_phase(server, RECOVERY_S)
    base, abused = phases["baseline"]["latency_ms"], phases["abuse"]["latency_ms"]
    return {
        "phases": phases,
        "ratios_abuse_to_baseline": {q: _ratio(abused[q], base[q]) for q in ("p50", "p99")},
        "abuse": {k: {"outcomes": dict(t.outcomes), "sent_bytes": t.sent_bytes} for k, t in tallies.items()},
    }


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="privtune-bench-abuse-") as tmp:
        scratch = Path(tmp)
        bundle, classifier = server_bundle(scratch)
        threads_before = {t.ident for t in threading.enumerate()}  # after the model load's own (tqdm) threads
        server = start_server(scratch, bundle, classifier)
        try:
            enroll_victim(server.port)
            measured = measure(server)
            hwm = _mib(proc_status_kib(server.pid, "VmHWM"))
        finally:
            stop_process(server.process, grace_s=STOP_GRACE_S)
        exit_code, errors = server.process.returncode, log_errors(server.log)
    leaked = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    doc = {
        "benchmark": "server_abuse",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": machine_info(),
        "threads": os.cpu_count() or 1,
        "params": params(),
        "baseline": "phase 'baseline': the same health probes with no abusive client",
        **measured,
        "server": {"vm_hwm_mib": hwm, "exit_code_after_sigterm": exit_code, "log_errors": errors},
        "bench_leaked_threads": leaked,
        "bench_total_s": time.perf_counter() - started,
    }
    print_table(doc)
    print(f"   server: {json.dumps(doc['server'])}; bench leaked threads {leaked}; total {doc['bench_total_s']:.0f} s")
    print(write_result(doc), flush=True)


if __name__ == "__main__":
    main()
