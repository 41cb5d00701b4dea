"""The `promptreel` command as a user types it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.support.server import ROOT, Server, clean_env


def run_cli(*args: str, data_dir: Path, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd or ROOT,
        env=clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_generate_writes_image_and_video_and_lists_the_job(tmp_path: Path):
    data_dir, out = tmp_path / "data", tmp_path / "out"
    result = run_cli(
        "generate",
        "a neon city at night",
        "--size",
        "1792x1024",
        "--duration",
        "5",
        "--seed",
        "42",
        "-o",
        str(out),
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines() if line.startswith("/")]
    assert [p.suffix for p in paths] == [".png", ".mp4"] and all(p.parent == out.resolve() for p in paths)
    assert "cost: $0.000" in result.stdout
    assert "Image Generation" in result.stderr and "Video Generation" in result.stderr and "100%" in result.stderr
    with Image.open(paths[0]) as image:
        assert image.size == (1792, 1024)
    with av.open(str(paths[1])) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (1280, 720)
        assert sum(1 for _ in container.decode(stream)) == 120

    listed = run_cli("jobs", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    job_id = paths[0].stem.removeprefix("promptreel-")
    assert job_id in listed.stdout and "completed" in listed.stdout and "neon city" in listed.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["generate", "x", "--duration", "7"], "--duration"),
        (["generate", "x", "--seed", "-5"], "seed"),
        (["generate", "x", "--size", "5x5"], "--size"),
        (["generate", "x", "--provider", "sora"], "--provider"),
        (["generate", "   "], "prompt"),
        (["serve", "--port", "99999"], "port"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tmp_path: Path, args, fragment):
    result = run_cli(*args, data_dir=tmp_path / "data", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptreel") and fragment in lines[0], result.stderr
    assert not (tmp_path / "data" / "promptreel.db").exists()  # refused before anything was stored


def test_generate_with_an_unconfigured_provider_says_which_setting(tmp_path: Path):
    result = run_cli("generate", "a cat", "--provider", "dalle3", data_dir=tmp_path / "data", timeout=60)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_server_leaves_a_job_that_generate_runs_and_cancels_it_there(tmp_path: Path):
    """Two processes on one store: the server does not run the CLI's job too, and its cancel reaches the CLI."""
    data_dir = tmp_path / "data"
    cli = subprocess.Popen(
        [sys.executable, "-m", "app", "generate", "a snowy forest at dawn", "--duration", "10", "-o", str(tmp_path / "out")],
        cwd=ROOT,
        env=clean_env(data_dir, PROMPTREEL_HEARTBEAT_SECONDS="0.5", PROMPTREEL_STALLED_AFTER_SECONDS="1.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = None
    try:
        job_id = None
        for line in cli.stderr:  # the CLI names its job before it starts rendering
            if match := re.search(r"\bjob (job_\S+)", line):
                job_id = match.group(1)
                break
        assert job_id, "the CLI did not name its job"
        server = Server(data_dir, PROMPTREEL_HEARTBEAT_SECONDS="0.5", PROMPTREEL_STALLED_AFTER_SECONDS="1.5").start()
        with server.client() as api:
            assert api.get("/api/v1/status").json()["active_jobs"] == 0  # the CLI's job is not run here too
            response = api.delete(f"/api/v1/jobs/{job_id}")
            assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
            stdout, stderr = cli.communicate(timeout=120)
            assert cli.returncode == 1 and "job cancelled" in stderr, (stdout, stderr)
            final = api.get(f"/api/v1/jobs/{job_id}").json()
        assert final["status"] == "cancelled" and final["video_url"] is None
        assert not any("resumed" in line for step in final["steps"] for line in step["log"])
    finally:
        if cli.poll() is None:
            cli.kill()
        if server is not None:
            server.stop()
