"""A promptreel cluster for tests and benchmarks: API instances and `promptreel worker`
processes on one PostgreSQL database, as an operator runs them on several hosts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text

from .server import ROOT, STARTUP_TIMEOUT, Server, clean_env, stop_process


def cluster_env(database_url: str, **extra: str) -> dict[str, str]:
    """Quick heartbeats, so that a killed worker's job is picked up again within seconds."""
    return {
        "DATABASE_URL": database_url,
        "PROMPTREEL_TASK_ENGINE": "procrastinate",
        "PROMPTREEL_SECRET_KEY": "cluster-test-signing-key",
        "PROMPTREEL_STORAGE_SECRET": "cluster-test-storage-secret",
        "PROMPTREEL_WEBHOOK_SECRET": "whsec_Y2x1c3Rlci10ZXN0LXdlYmhvb2stc2VjcmV0LTMyYnl0ZXM=",
        "PROMPTREEL_HEARTBEAT_SECONDS": "0.5",
        "PROMPTREEL_STALLED_AFTER_SECONDS": "2",
        **extra,
    }


class Worker:
    """`python -m app worker` in its own process; ready once it says so on stdout."""

    def __init__(self, data_dir: Path, concurrency: int = 2, **env: str):
        self.data_dir = data_dir
        self.concurrency = concurrency
        self.env = clean_env(data_dir, **env)
        self.process: subprocess.Popen[str] | None = None
        self.log_path = data_dir / "worker.log"
        self._ready = threading.Event()

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "--concurrency", str(self.concurrency)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._copy_output, args=(self.process,), daemon=True).start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"worker did not get ready:\n{self.log_path.read_text()}")
        return self

    def _copy_output(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout, self.log_path.open("a") as log:  # the pipe closes at the worker's end
            for line in process.stdout:
                log.write(line)
                log.flush()
                if ": ready," in line:
                    self._ready.set()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)


class Cluster:
    """Two API instances and two workers (by default) sharing one database and one bucket."""

    def __init__(
        self, root: Path, database_url: str, instances: int = 2, workers: int = 2, worker_concurrency: int = 2, **env: str
    ):
        self.database_url = database_url
        self.env = cluster_env(database_url, **env)
        self.instances = [Server(root / f"api-{index}", **self.env) for index in range(instances)]
        self.workers = [Worker(root / f"worker-{index}", worker_concurrency, **self.env) for index in range(workers)]
        self.engine = create_engine(database_url)

    def start(self) -> Cluster:
        try:
            self.instances[0].start()  # the first one creates the schema; the others find it
            with ThreadPoolExecutor() as pool:  # the rest start side by side, as on separate hosts
                for started in [pool.submit(process.start) for process in [*self.instances[1:], *self.workers]]:
                    started.result()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in [*self.workers, *self.instances]:
            process.stop()
        self.engine.dispose()

    def owner_pid(self, job_id: str) -> int | None:
        """The pid of the process holding the job's lease (`host:pid:token`)."""
        with self.engine.connect() as connection:
            owner = connection.execute(text("SELECT worker_id FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
        return int(owner.split(":")[1]) if owner else None

    def worker_running(self, job_id: str) -> Worker:
        pid = self.owner_pid(job_id)
        (worker,) = [worker for worker in self.workers if worker.pid == pid]
        return worker

    def queued_procrastinate_jobs(self, job_id: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                text("SELECT count(*) FROM procrastinate_jobs WHERE lock = :id AND status IN ('todo', 'doing')"), {"id": job_id}
            ).scalar_one()
