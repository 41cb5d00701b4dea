"""The /ws frame cache: each event serialised once for every client that shares its base URL."""

from __future__ import annotations

import json
from pathlib import Path

from backend.api.websocket import FrameTexts
from backend.auth import Authenticator
from backend.settings import Settings


def test_an_event_is_serialised_once_per_base_url_and_never_confused_with_another(tmp_path: Path):
    auth = Authenticator(Settings(PROMPTREEL_DATA_DIR=tmp_path, PROMPTREEL_SECRET_KEY="k" * 32))
    frames = FrameTexts(size=2)
    event = {
        "type": "job_completed",
        "jobId": "job_1",
        "seq": 9,
        "data": {"id": "job_1", "video_url": "/api/v1/jobs/job_1/download/video"},
    }
    first = frames.text(event, "http://a.test/", auth)
    assert frames.text(event, "http://a.test/", auth) is first  # the same string: not made again
    sent = json.loads(first)
    assert sent["seq"] == 9 and sent["data"]["video_url"].startswith("http://a.test/api/v1/jobs/job_1/download/video?")
    assert "signature=" in sent["data"]["video_url"]
    other_base = json.loads(frames.text(event, "http://b.test/", auth))
    assert other_base["data"]["video_url"].startswith("http://b.test/")
    # An equal but different event (another publish) gets its own frame, even once the cache turned over.
    again = {**event, "seq": 10}
    assert json.loads(frames.text(again, "http://a.test/", auth))["seq"] == 10
    frames.text({**event, "seq": 11}, "http://a.test/", auth)
    assert json.loads(frames.text(event, "http://a.test/", auth))["seq"] == 9
