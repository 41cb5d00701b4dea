"""Fake OpenAI, Replicate and Runway servers: real HTTP on loopback, speaking each provider's
documented wire format, errors included. `python -m tests.fakes` runs all three for a demo."""

from .base import FakeServer, Hold, Reply, Seen
from .fake_openai import FakeOpenAI
from .fake_replicate import FakeReplicate
from .fake_runway import FakeRunway

__all__ = ["FakeOpenAI", "FakeReplicate", "FakeRunway", "FakeServer", "Hold", "Reply", "Seen", "provider_env"]


def provider_env(
    openai: FakeOpenAI | None = None, replicate: FakeReplicate | None = None, runway: FakeRunway | None = None
) -> dict[str, str]:
    """The environment variables that point promptreel at the given fakes."""
    env: dict[str, str] = {}
    if openai is not None:
        env.update(OPENAI_API_KEY=openai.key, OPENAI_BASE_URL=openai.base_url)
    if replicate is not None:
        env.update(REPLICATE_API_TOKEN=replicate.key, REPLICATE_BASE_URL=replicate.url)
    if runway is not None:
        env.update(RUNWAYML_API_SECRET=runway.key, RUNWAYML_BASE_URL=runway.url)
    return env
