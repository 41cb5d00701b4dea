"""The parts of batches that need no server: a batch's slots in the rate limit, its variants'
seeds, and the names of a batch's fields in errors."""

from __future__ import annotations

import pytest

from backend.errors import RateLimited
from backend.jobs.request import MAX_SEED, VariantsRequest, describe, field_name
from backend.jobs.service import variant_seeds
from backend.rate_limit import RateLimiter
from tests.api.test_limits import FakeClock


def test_a_batch_takes_its_slots_of_the_rate_limit_all_or_none():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    limiter.check("alice")
    clock.now += 10
    limiter.check_many("alice", 3)  # 4 of 5 taken
    clock.now += 10
    with pytest.raises(RateLimited) as refused:
        limiter.check_many("alice", 2)
    # Room for two once the first call (t=1000) has left the window, at 1060: 40 s from now.
    assert refused.value.details == {"limit": 5, "retryAfter": 40}
    limiter.check("alice")  # the refused batch took nothing: the fifth slot is still free
    with pytest.raises(RateLimited) as never:
        RateLimiter(5, clock=clock).check_many("bob", 6)
    assert never.value.details["retryAfter"] == 60
    RateLimiter(0, clock=clock).check_many("carol", 50)  # 0: no limit


def test_variants_take_consecutive_seeds_or_distinct_random_ones():
    def seeds(count: int, seed: int | None) -> list[int]:
        settings = {} if seed is None else {"seed": seed}
        return variant_seeds(
            VariantsRequest.model_validate({"prompt": "p", "provider": "local", "settings": settings, "count": count})
        )

    assert seeds(4, 7) == [7, 8, 9, 10]
    assert seeds(3, MAX_SEED) == [MAX_SEED, 0, 1]
    drawn = seeds(8, None)
    assert len(drawn) == len(set(drawn)) == 8 and all(0 <= seed <= MAX_SEED for seed in drawn)


def test_a_batch_job_keeps_its_position_in_the_field_name():
    assert field_name(("body", "jobs", 3, "settings", "videoDuration")) == "jobs[3].settings.videoDuration"
    assert field_name(("body", "webhookEvents", 0)) == "webhookEvents"  # elsewhere a position says nothing
    message, field = describe([{"loc": ("body", "jobs", 2, "settings", "imageSize"), "type": "literal_error", "msg": "x"}])
    assert (field, message) == ("jobs[2].settings.imageSize", "jobs[2]: The image size is 1024x1024, 1792x1024 or 1024x1792.")
