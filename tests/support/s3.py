"""A real S3 emulator for tests: moto in server mode, in its own process, on loopback.

Both the promptreel server under test and the test itself talk to it over HTTP, exactly as
they would to S3; nothing is mocked inside the processes.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from .server import free_port, stop_process, wait_until_answers

#: moto accepts any key; these are the values its documentation uses.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """`python -m moto.server` on a free port; `new_bucket()` gives each test its own bucket."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_answers(f"{self.endpoint_url}/moto-api/", self.process, self.log_path, "moto server")
        return self

    def stop(self) -> None:
        stop_process(self.process, signal.SIGKILL)  # a test emulator: nothing to flush

    def new_bucket(self) -> str:
        name = f"promptreel-test-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, **extra: str) -> dict[str, str]:
        """The variables that point a promptreel process at `bucket` on this server."""
        return {
            **CREDENTIALS,
            "PROMPTREEL_S3_BUCKET": bucket,
            "PROMPTREEL_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",  # no credential lookups beyond the variables above
            **extra,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        answer = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def get(self, bucket: str, key: str) -> dict[str, Any]:
        """The object's metadata, with its bytes under "Bytes"."""
        answer = self.client.get_object(Bucket=bucket, Key=key)
        return {**answer, "Bytes": answer["Body"].read()}


@contextmanager
def moto_server(log_dir: Path) -> Iterator[MotoServer]:
    server = MotoServer(log_dir).start()
    try:
        yield server
    finally:
        server.stop()
