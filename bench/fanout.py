"""/ws fan-out: how late 200 WebSocket clients hear the events of 100 running jobs.

    .venv/bin/python -m bench.fanout [--clients 200] [--jobs 100] [--client-processes 2]
                                           [--image-seconds 1] [--video-seconds 2]

Measured: `promptreel serve` (bench/fanout_servers.py product: fixed-latency fake providers, no
provider limit, no rate limit, a fresh data dir) with `--clients` /ws connections opened by
`--client-processes` separate processes (asyncio + websockets, every job's events, no subscribe),
then `--jobs` jobs posted at once. Per event and client: the delay from the moment the pipeline
published the event (noted in the server process) to the moment the client read the frame (noted
in the client process; same machine, same wall clock). Also shown: how much of it the event log's
write takes (published -> handed to the subscribers).

Baseline, in the same run: a bare broadcast on the same stack (fanout_servers.py bare: FastAPI on
uvicorn with wsproto, no store, no bus) replays the very messages the clients got, at the moments
they were published, sending each to every client in turn; the same client code measures it.

Target: p99 delay under 100 ms. The ratio to the baseline says how much is promptreel's.
Neither server compresses frames (permessage-deflate off, as app/server.py serves: it was about
45% of the fan-out's CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, free_python, percentile, result, summary_ms
from bench.proc_cpu import process_cpu
from tests.support.server import Server, free_port

TARGET_P99 = 0.100
#: How long the clients wait for the last job to end before they give up (s).
CLIENT_TIMEOUT = 180.0
Key = tuple[str, int | None, str]


def key_of(event: dict[str, Any]) -> Key:
    return event["jobId"], event.get("seq"), event["type"]


# -- the client processes ---------------------------------------------------------------


async def listen(url: str, connections: int, jobs: int, out: Path, keep_texts: bool) -> None:
    """Open `connections` to `url`, say "ready", read every frame until each connection has heard
    `jobs` jobs end, then write [(key, received at)] (and, with keep_texts, one connection's texts)."""
    import websockets

    sockets = [await websockets.connect(url, max_size=None, ping_interval=None) for _ in range(connections)]
    print("ready", flush=True)
    frames: list[list[tuple[float, str]]] = [[] for _ in sockets]

    async def read(socket: Any, into: list[tuple[float, str]]) -> None:
        ended: set[str] = set()
        while len(ended) < jobs:
            text = await socket.recv()
            into.append((time.time(), text))  # parsed afterwards: reading must stay cheap
            if "job_completed" in text or "job_failed" in text:
                event = json.loads(text)
                if event["type"] in ("job_completed", "job_failed"):
                    ended.add(event["jobId"])

    try:
        await asyncio.wait_for(asyncio.gather(*(read(s, f) for s, f in zip(sockets, frames, strict=True))), CLIENT_TIMEOUT)
    except TimeoutError:
        print("timed out before every job ended", file=sys.stderr, flush=True)
    for socket in sockets:
        await socket.close()
    received = []
    for connection in frames:
        for at, text in connection:
            received.append([*key_of(json.loads(text)), at])
    texts = [text for _, text in frames[0]] if keep_texts else []
    out.write_text(json.dumps({"received": received, "texts": texts, "cpu": time.process_time()}))


def start_clients(url: str, options: argparse.Namespace, folder: Path) -> list[tuple[subprocess.Popen[str], Path]]:
    """The client processes, each with its share of the connections, once all are connected."""
    clients = []
    for index in range(options.client_processes):
        share = options.clients // options.client_processes + (index < options.clients % options.client_processes)
        out = folder / f"client-{index}.json"
        command = [
            free_python(),
            "-m",
            "bench.fanout",
            "client",
            "--url",
            url,
            "--connections",
            str(share),
            "--jobs",
            str(options.jobs),
            "--out",
            str(out),
        ]
        process = subprocess.Popen(
            command + (["--keep-texts"] if index == 0 else []), cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        clients.append((process, out))
    for process, _ in clients:
        if process.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("a client process could not connect")
    return clients


def collect(clients: list[tuple[subprocess.Popen[str], Path]]) -> tuple[list[tuple[Key, float]], list[str], float]:
    """What the clients received, connection 0's texts, and the clients' CPU seconds."""
    received: list[tuple[Key, float]] = []
    texts: list[str] = []
    cpu = 0.0
    for process, out in clients:
        if process.wait(timeout=CLIENT_TIMEOUT + 60) != 0:
            raise RuntimeError("a client process failed")
        answer = json.loads(out.read_text())
        received += [((job_id, seq, kind), at) for job_id, seq, kind, at in answer["received"]]
        texts += answer["texts"]
        cpu += answer["cpu"]
    return received, texts, cpu


# -- one measurement --------------------------------------------------------------------


class Measured:
    """What the clients heard against what the server produced."""

    def __init__(
        self, produced: list[list[Any]], received: list[tuple[Key, float]], clients: int, server_cpu: float, client_cpu: float
    ):
        self.server_cpu, self.client_cpu = server_cpu, client_cpu
        self.published: dict[Key, float] = {(j, s, t): p for j, s, t, p, _ in produced}
        self.stored = [d - p for _, _, _, p, d in produced]  # published -> handed to the subscribers
        self.delays = [at - self.published[key] for key, at in received if key in self.published]
        self.expected = len(produced) * clients
        self.events = len(produced)

    def describe(self, what: str) -> str:
        missing = self.expected - len(self.delays)
        return (
            f"{what}: {self.events} events x clients = {len(self.delays)} frames ({missing} missing),"
            f" delay {summary_ms(self.delays)}\n"
            f"  CPU seconds while the events flowed: server {self.server_cpu:.1f}, clients {self.client_cpu:.1f}"
        )

    @property
    def p50(self) -> float:
        return percentile(self.delays, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.delays, 0.99)


async def post_jobs(base_url: str, jobs: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/api/v1/generate",
                    json={
                        "prompt": f"a lighthouse in a storm, take {index}",
                        "provider": "local",
                        "settings": {"videoDuration": 5, "seed": index},
                    },
                )
                for index in range(jobs)
            )
        )
    refused = [answer.text for answer in answers if answer.status_code not in (200, 201, 202)]
    if refused:
        raise RuntimeError(f"{len(refused)} jobs refused, e.g. {refused[0]}")


def measure_product(options: argparse.Namespace, folder: Path) -> tuple[Measured, list[tuple[float, str]]]:
    """The product run; also the replay for the baseline: (seconds after the first event, text)."""
    port, times = free_port(), folder / "product-times.json"
    command = [
        "-m",
        "bench.fanout_servers",
        "product",
        "--times",
        str(times),
        "--image-seconds",
        str(options.image_seconds),
        "--video-seconds",
        str(options.video_seconds),
    ]
    server = Server(
        folder / "product",
        port,
        command=command,
        PROMPTREEL_LOCAL_CONCURRENCY="10000",
        PROMPTREEL_RATE_LIMIT_PER_MINUTE="0",
        PROMPTREEL_MAX_QUEUED_JOBS="100000",
    ).start()
    try:
        clients = start_clients(f"ws://127.0.0.1:{port}/ws", options, folder)
        server_cpu = process_cpu(server.process.pid)
        asyncio.run(post_jobs(f"http://127.0.0.1:{port}", options.jobs))
        received, texts, client_cpu = collect(clients)
        server_cpu = process_cpu(server.process.pid) - server_cpu
    finally:
        server.stop()
    produced = json.loads(times.read_text())
    measured = Measured(produced, received, options.clients, server_cpu, client_cpu)
    by_key = {key_of(json.loads(text)): text for text in texts}
    first = produced[0][3]
    replay = [
        (published - first, by_key[(job_id, seq, kind)])
        for job_id, seq, kind, published, _ in produced
        if (job_id, seq, kind) in by_key
    ]
    return measured, replay


def measure_bare(options: argparse.Namespace, folder: Path, replay: list[tuple[float, str]]) -> Measured:
    port, times, replay_path = free_port(), folder / "bare-times.json", folder / "replay.json"
    replay_path.write_text(json.dumps(replay))
    command = [
        "-m",
        "bench.fanout_servers",
        "bare",
        "--times",
        str(times),
        "--replay",
        str(replay_path),
        "--clients",
        str(options.clients),
    ]
    server = Server(folder / "bare", port, command=command).start()
    try:
        server_cpu = process_cpu(server.process.pid)
        received, _, client_cpu = collect(start_clients(f"ws://127.0.0.1:{port}/ws", options, folder))
        server_cpu = process_cpu(server.process.pid) - server_cpu
    finally:
        server.stop()
    return Measured(json.loads(times.read_text()), received, options.clients, server_cpu, client_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200, help="/ws connections (default 200)")
    parser.add_argument("--jobs", type=int, default=100, help="jobs posted at once (default 100)")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the connections are shared by (default 2)")
    parser.add_argument("--image-seconds", type=float, default=1.0, help="fake image latency (default 1)")
    parser.add_argument("--video-seconds", type=float, default=2.0, help="fake video latency (default 2)")
    if sys.argv[1:2] == ["client"]:
        client = argparse.ArgumentParser(prog="python -m bench.fanout client")
        client.add_argument("--url", required=True)
        client.add_argument("--connections", type=int, required=True)
        client.add_argument("--jobs", type=int, required=True)
        client.add_argument("--out", type=Path, required=True)
        client.add_argument("--keep-texts", action="store_true")
        args = client.parse_args(sys.argv[2:])
        asyncio.run(listen(args.url, args.connections, args.jobs, args.out, args.keep_texts))
        return
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        product, replay = measure_product(options, Path(tmp))
        print(product.describe(f"promptreel /ws, {options.clients} clients, {options.jobs} jobs"))
        print(f"  of which published -> handed to the subscribers (the event log's write): {summary_ms(product.stored)}")
        bare = measure_bare(options, Path(tmp), replay)
        print(bare.describe(f"bare broadcast of the same {len(replay)} messages (baseline)"))
    print(f"ratio promptreel / bare: p50 {product.p50 / bare.p50:.2f}, p99 {product.p99 / bare.p99:.2f}")
    result(
        f"/ws fan-out p99, {options.clients} clients x {options.jobs} jobs",
        f"p50 {product.p50 * 1000:.0f} ms, p99 {product.p99 * 1000:.0f} ms",
        f"bare broadcast p50 {bare.p50 * 1000:.0f} ms, p99 {bare.p99 * 1000:.0f} ms",
        "p99 < 100 ms",
        product.p99 < TARGET_P99,
    )


if __name__ == "__main__":
    main()
