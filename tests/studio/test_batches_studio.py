"""The form's "Variants" and "Images first" with NiceGUI's simulated user: the estimate multiplies by
the variants and drops the video for images first, and submitting makes one batch. (The grid of a
batch, in Chromium: tests/studio/test_studio_batches.py.)"""

from __future__ import annotations

import asyncio

from nicegui import ui
from nicegui.testing.user import User

from backend.jobs.request import validate_request
from backend.system import System
from components.format import money
from components.job_actions import rerun_request
from tests.studio.test_models_studio import element, studio  # the studio with OpenAI and Runway keys (no request leaves)

__all__ = ["studio"]


def toggle(user: User, testid: str) -> ui.toggle:
    (found,) = [t for t in user.find(kind=ui.toggle).elements if t.props.get("data-testid") == testid]
    return found


async def test_variants_multiply_the_estimate_and_images_first_drop_the_video(studio: tuple[User, System]):
    user, system = studio
    await user.open("/")
    image_only = user.find(kind=ui.switch).elements.pop()
    one = system.jobs.estimate(validate_request({"prompt": "p", "provider": "dalle3", "settings": {"videoProvider": "runway"}}))
    await user.should_see(marker="estimate", content=money(one["total"]))
    toggle(user, "variants").value = 3
    await user.should_see(marker="estimate", content=money(round(3 * one["total"], 4)))
    await user.should_see(f"3 × image {money(one['imageGeneration'])} + video {money(one['videoGeneration'])}")
    image_only.value = True
    await user.should_see(marker="estimate", content=money(round(3 * one["imageGeneration"], 4)))
    await user.should_see(f"3 × image {money(one['imageGeneration'])}; the video when you animate one")

    element(user, "image-provider").value = "local"
    element(user, "video-provider").value = "local"
    user.find(marker="prompt").type("a harbour at dawn")
    pending: list[str] = []
    all_three: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def listen(event: dict) -> None:
        if event["type"] == "job_update" and event["data"]["status"] == "pending":
            pending.append(event["jobId"])
            if len(pending) == 3 and not all_three.done():
                all_three.set_result(None)

    stop = system.jobs.listen(listen)
    try:
        user.find(marker="generate").click()
        await asyncio.wait_for(all_three, 10)
    finally:
        stop()
    records, total = system.jobs.list()
    (batch_id,) = {record.job.batch_id for record in records}
    assert total == 3 and batch_id and all(record.job.image_only for record in records)
    assert len({record.job.seed for record in records}) == 3  # no seed given: distinct random ones
    await user.should_see(marker="batch-title", content="Batch of 3 jobs")  # the form opened the batch's grid
    await system.jobs.cancel_batch(batch_id)


def test_run_again_of_an_image_only_job_makes_only_the_image_again():
    """ "Run again" repeats the request that made the job: an image-only job's again stops after its
    image (before, it made and charged a video too)."""
    job = {
        "prompt": "a harbour at dawn",
        "provider": "dalle3",
        "metadata": {"imageSize": "1024x1024", "quality": "standard", "seed": 7, "videoProvider": "runway", "imageOnly": True},
    }
    again = validate_request(rerun_request(job))
    assert again.settings.imageOnly is True and again.settings.seed == 7
    whole = validate_request(rerun_request({**job, "metadata": {**job["metadata"], "imageOnly": False}}))
    assert not whole.settings.imageOnly
