"""`comfyui`: the user's own ComfyUI, for the image step and the video step, over its server API
(ComfyUI's server.py): `POST /prompt` with the filled workflow and our `client_id` (the answered
`prompt_id` is saved at once, like a remote task id), events over `/ws?clientId=` (`progress`
value/max, `execution_success`, `execution_error`, `execution_interrupted`, `status`, and the binary
preview frames, handed to the pipeline as the step's live preview), the result
from `GET /history/{prompt_id}` and `GET /view`, the input image through `POST /upload/image`.

A dropped socket (or a ComfyUI that went away and came back) is followed by a look at /history
and /queue for the saved prompt_id: a finished prompt's files are fetched, a queued or running one
is followed again, one that ComfyUI no longer knows fails the step; it is never queued twice. A
cancel deletes the prompt from the queue while it waits, or interrupts it while it runs (only
when the running prompt is ours). Free: it runs on the user's machine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import av
import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from backend.media.checks import MediaLimits, MediaRejected, open_image
from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepContext, VideoRequest, VideoResult
from backend.providers.comfyui.media import as_png, to_mp4
from backend.providers.comfyui.workflow import IMAGE_WORKFLOW, VIDEO_WORKFLOW, Workflow, WorkflowError
from backend.providers.output_urls import OutputUrlPolicy
from backend.providers.remote import download, http_client, key_check_get
from backend.providers.retry import RetryPolicy
from backend.settings import Settings

NAME, LABEL = "comfyui", "ComfyUI"
IMAGE_MODEL, VIDEO_MODEL = "comfyui-image", "comfyui-video"
#: The frame rate a video workflow is asked for, unless its mapping has no fps input.
VIDEO_FPS = 24
#: Longest a prompt may take, queue included (s).
MAX_WAIT = 60 * 60.0
#: Longest ComfyUI may stay unreachable while a prompt of ours is in it (s).
RECONNECT_FOR = 120.0
#: ComfyUI's binary WebSocket events (protocol.py BinaryEventTypes): a 4-byte big-endian event type,
#: then for PREVIEW_IMAGE a 4-byte image type (1 JPEG, 2 PNG) and the image; for
#: PREVIEW_IMAGE_WITH_METADATA a 4-byte length, that much JSON (`prompt_id`, `image_type`...) and the image.
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
PREVIEW_IMAGE_TYPES = (1, 2)
#: Video sizes asked of a video workflow, by the image's orientation (LTX-Video takes multiples of 32).
VIDEO_SIZES = {"landscape": (768, 512), "portrait": (512, 768), "square": (640, 640)}


def preview_frame(message: bytes, prompt_id: str) -> bytes | None:
    """The image of a binary preview message (still untrusted bytes), None for another binary event,
    a malformed one, or the preview of another prompt."""
    if len(message) < 8:
        return None
    event, second = struct.unpack(">II", message[:8])
    if event == PREVIEW_IMAGE:
        return message[8:] if second in PREVIEW_IMAGE_TYPES and len(message) > 8 else None
    if event == PREVIEW_IMAGE_WITH_METADATA:
        try:
            metadata = json.loads(message[8 : 8 + second])
        except ValueError:
            return None
        if not isinstance(metadata, dict) or metadata.get("prompt_id") not in (None, prompt_id):
            return None
        image = message[8 + second :]
        return image or None
    return None


class ComfyUIProvider:
    name = NAME

    def __init__(self, settings: Settings, *, policy: RetryPolicy | None = None):
        assert settings.comfyui_url
        self.settings = settings
        self.base_url = settings.comfyui_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.limits = MediaLimits.from_settings(settings)
        self.image_workflow = Workflow.load(settings.comfyui_image_workflow or IMAGE_WORKFLOW)
        self.video_workflow = Workflow.load(settings.comfyui_video_workflow or VIDEO_WORKFLOW)
        self.concurrency = settings.comfyui_concurrency
        self._slots: asyncio.Semaphore | None = None
        #: The queue position last logged, per running step (its context's id).
        self._told: dict[int, int] = {}

    # -- what the registry asks -----------------------------------------------------------

    def model_for(self, quality: str) -> str:
        return IMAGE_MODEL

    @property
    def model(self) -> str:
        return VIDEO_MODEL

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.comfyui_token}"} if self.settings.comfyui_token else {}

    def check_key(self, timeout: float) -> tuple[bool | None, str | None]:
        """ComfyUI answers /system_stats (None when it cannot be reached: the jobs explain it)."""
        try:
            response = key_check_get(
                f"{self.base_url}/system_stats", provider=NAME, label=LABEL, headers=self._headers(), timeout=timeout
            )
        except (httpx.HTTPError, ProviderError) as error:
            return None, f"ComfyUI at {self.base_url} does not answer: {error}"
        if response.status_code in (401, 403):
            return False, f"ComfyUI rejected the token ({response.status_code}): check COMFYUI_TOKEN"
        if response.status_code != 200:
            return None, f"ComfyUI answered {response.status_code} to /system_stats"
        return True, None

    def check_model(self, model_id: str, timeout: float) -> tuple[bool | None, str | None]:
        """Whether ComfyUI has every node class (GET /object_info/{class}) and model file
        (GET /models/{folder}) the model's workflow names; the reason names what is missing."""
        workflow = self.image_workflow if model_id == IMAGE_MODEL else self.video_workflow
        try:
            return self._missing(workflow, timeout)
        except (httpx.HTTPError, ProviderError, ValueError) as error:
            return None, f"ComfyUI could not be asked: {error}"

    def _missing(self, workflow: Workflow, timeout: float) -> tuple[bool | None, str | None]:
        def get(path: str) -> httpx.Response:
            return key_check_get(f"{self.base_url}{path}", provider=NAME, label=LABEL, headers=self._headers(), timeout=timeout)

        problems: list[str] = []
        for node_class in workflow.node_classes:
            response = get(f"/object_info/{node_class}")
            if response.status_code != 200:
                return None, f"ComfyUI answered {response.status_code} to /object_info/{node_class}"
            if node_class not in response.json():
                problems.append(f"ComfyUI has no node `{node_class}` (a custom node that is not installed?)")
        folders: dict[str, list[str] | None] = {}
        for model_file in workflow.model_files:
            if model_file.folder not in folders:
                response = get(f"/models/{model_file.folder}")
                folders[model_file.folder] = response.json() if response.status_code == 200 else None
            files = folders[model_file.folder]
            if files is None or model_file.filename not in files:
                problems.append(model_file.missing())
        if problems:
            return False, f"{workflow.name}: " + "; ".join(problems)
        return True, None

    # -- the steps --------------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        workflow = self.image_workflow
        width, height = request.width, request.height
        values: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed, "width": width, "height": height}
        async with self._client() as client:
            files = await self._run(client, workflow, values, ctx, kind="image")
        try:
            png, size = as_png(files[0].read_bytes(), self.limits)
        except (ValueError, Image.DecompressionBombError) as error:
            raise ProviderError(NAME, f"ComfyUI's image does not decode: {error}") from None
        finally:
            shutil.rmtree(files[0].parent, ignore_errors=True)
        ctx.progress(1.0)
        return ImageResult(png=png, model=IMAGE_MODEL, metadata={"workflow": workflow.name, "width": size[0], "height": size[1]})

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        workflow = self.video_workflow
        try:
            with open_image(request.image_path, self.limits, whose="the image to animate") as image:
                ratio = image.width / image.height
        except (MediaRejected, OSError) as error:
            raise ProviderError(NAME, f"the image to animate cannot be read: {error}") from None
        orientation = "landscape" if ratio > 1.15 else "portrait" if ratio < 1 / 1.15 else "square"
        width, height = VIDEO_SIZES[orientation]
        fps = VIDEO_FPS
        values: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": request.seed,
            "width": width,
            "height": height,
            "frames": workflow.frames_for(request.duration, fps),
            "fps": fps,
        }
        async with self._client() as client:
            if not ctx.remote_id and "image" in workflow.inputs:
                values["image"] = await self._upload(client, request.image_path)
            files = await self._run(client, workflow, values, ctx, kind="video")
        try:
            size = await asyncio.to_thread(to_mp4, files, request.output_path, fps)
        except (ValueError, OSError, av.FFmpegError, Image.DecompressionBombError) as error:
            raise ProviderError(NAME, f"ComfyUI's video could not be made an MP4: {error}") from None
        finally:
            shutil.rmtree(files[0].parent, ignore_errors=True)
        ctx.progress(1.0)
        return VideoResult(model=VIDEO_MODEL, width=size[0], height=size[1], metadata={"workflow": workflow.name})

    def _client(self) -> httpx.AsyncClient:
        return http_client(
            provider=NAME,
            label=LABEL,
            base_url=self.base_url,
            headers=self._headers(),
            timeout=httpx.Timeout(60.0, connect=10.0),
            max_bytes=16 * 2**20,
        )

    async def _upload(self, client: httpx.AsyncClient, path: Path) -> str:
        name = f"promptreel_{uuid.uuid4().hex[:12]}{path.suffix or '.png'}"
        try:
            response = await client.post(
                "/upload/image",
                files={"image": (name, path.read_bytes(), "image/png")},
                data={"type": "input", "overwrite": "true"},
            )
        except httpx.HTTPError as error:
            raise ProviderError(NAME, f"ComfyUI at {self.base_url} could not take the image: {error}", transient=True) from error
        if response.status_code != 200:
            raise self._answer(response, "uploading the image")
        body = response.json()
        subfolder = body.get("subfolder") or ""
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    def _answer(self, response: httpx.Response, what: str) -> ProviderError:
        if response.status_code in (401, 403):
            return ProviderError(
                NAME, f"ComfyUI rejected the token ({response.status_code}): check COMFYUI_TOKEN", code="PROVIDER_AUTH"
            )
        return ProviderError(NAME, f"ComfyUI answered {response.status_code} while {what}: {response.text[:200]}")

    def _slots_for_loop(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    async def _run(
        self,
        client: httpx.AsyncClient,
        workflow: Workflow,
        values: dict[str, Any],
        ctx: StepContext,
        *,
        kind: Literal["image", "video"],
    ) -> list[Path]:
        """Queue the prompt (or follow the one saved before a restart) and fetch its files."""
        client_id = uuid.uuid4().hex
        if ctx.remote_id:
            ctx.log(f"following ComfyUI prompt {ctx.remote_id} again (queued before a restart)")
            entry = await self._follow(client, ctx.remote_id, client_id, workflow, ctx)
        elif ctx.resumed:
            raise ProviderError(
                NAME,
                "the ComfyUI prompt was interrupted by a restart before its id was saved; it was not queued again "
                "(it may be in ComfyUI's queue). Run the job again.",
                code="PROVIDER_INTERRUPTED",
            )
        else:
            async with self._slots_for_loop():  # COMFYUI_CONCURRENCY prompts of ours at once in this ComfyUI

                async def submit() -> str:
                    prompt_id = await self._queue(client, workflow.filled(values), client_id, workflow)
                    await ctx.save_remote_id(prompt_id)
                    ctx.log(f"queued ComfyUI prompt {prompt_id} ({workflow.name})")
                    return prompt_id

                entry = await self._follow(client, None, client_id, workflow, ctx, submit=submit)
        ctx.remote_succeeded(IMAGE_MODEL if kind == "image" else VIDEO_MODEL)
        return await self._fetch(client, entry, workflow, kind, ctx)

    async def _queue(self, client: httpx.AsyncClient, graph: dict[str, Any], client_id: str, workflow: Workflow) -> str:
        try:
            response = await client.post("/prompt", json={"prompt": graph, "client_id": client_id})
        except httpx.TimeoutException as error:
            raise ProviderError(NAME, f"ComfyUI did not answer the prompt in time ({error}); it was not queued again") from error
        except httpx.HTTPError as error:
            raise ProviderError(NAME, f"ComfyUI at {self.base_url} cannot be reached: {error}", transient=True) from error
        if response.status_code == 400:
            raise ProviderError(NAME, self._refusal(response, workflow))
        if response.status_code != 200:
            raise self._answer(response, "queueing the prompt")
        body = response.json()
        if not isinstance(body, dict) or not body.get("prompt_id"):
            raise ProviderError(NAME, "ComfyUI queued the prompt but its answer has no prompt_id")
        return str(body["prompt_id"])

    @staticmethod
    def _refusal(response: httpx.Response, workflow: Workflow) -> str:
        """POST /prompt's 400 in words: its error message and each node's errors with the node type."""
        try:
            body = response.json()
        except ValueError:
            return f"ComfyUI refused the workflow: {response.text[:200]}"
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else str(error)
        details = error.get("details") if isinstance(error, dict) else ""
        parts = [f"ComfyUI refused the workflow: {message}" + (f" ({details})" if details else "")]
        for node_id, node_error in (body.get("node_errors") or {}).items():
            node_type = node_error.get("class_type") or workflow.node_type(node_id)
            for item in node_error.get("errors", []):
                parts.append(f"{node_type} (node {node_id}): {item.get('message')}: {item.get('details')}")
        return "; ".join(parts)

    async def _state(self, client: httpx.AsyncClient, prompt_id: str) -> tuple[str, dict[str, Any] | None, int]:
        """Where the prompt is: ("done", its history entry, 0), ("running", None, 0),
        ("queued", None, prompts ahead) or ("gone", None, 0)."""
        entry = await self._history(client, prompt_id)
        if entry is not None:
            return "done", entry, 0
        response = await client.get("/queue")
        if response.status_code != 200:
            raise self._answer(response, "reading the queue")
        queue = response.json()
        running = [item[1] for item in queue.get("queue_running", [])]
        pending = sorted(queue.get("queue_pending", []), key=lambda item: item[0])
        if prompt_id in running:
            return "running", None, 0
        for index, item in enumerate(pending):
            if item[1] == prompt_id:
                return "queued", None, index + len(running)
        # It may have ended between the two reads: ComfyUI writes the history before it leaves the queue.
        entry = await self._history(client, prompt_id)
        return ("done", entry, 0) if entry is not None else ("gone", None, 0)

    async def _history(self, client: httpx.AsyncClient, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's /history entry once it ended (None before)."""
        response = await client.get(f"/history/{prompt_id}")
        if response.status_code != 200:
            raise self._answer(response, f"reading the history of prompt {prompt_id}")
        history = response.json()
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if isinstance(entry, dict):
            status = entry.get("status") or {}
            if status.get("completed") or status.get("status_str") in ("success", "error"):
                return entry
        return None

    async def _follow(
        self,
        client: httpx.AsyncClient,
        prompt_id: str | None,
        client_id: str,
        workflow: Workflow,
        ctx: StepContext,
        submit: Callable[[], Awaitable[str]] | None = None,
    ) -> dict[str, Any]:
        try:
            return await self._follow_to_end(client, prompt_id, client_id, workflow, ctx, submit)
        finally:
            self._told.pop(id(ctx), None)

    async def _follow_to_end(
        self,
        client: httpx.AsyncClient,
        prompt_id: str | None,
        client_id: str,
        workflow: Workflow,
        ctx: StepContext,
        submit: Callable[[], Awaitable[str]] | None = None,
    ) -> dict[str, Any]:
        """Wait for the prompt's end over /ws, reading /history (and /queue) at every (re)connection;
        the history entry of a prompt that succeeded, else a ProviderError. Without a `prompt_id`,
        `submit` queues it once the socket is open, so that no event of it is missed."""
        deadline = time.monotonic() + MAX_WAIT
        unreachable_since: float | None = None
        ws_url = httpx.URL(self.base_url).copy_with(scheme="wss" if self.base_url.startswith("https") else "ws")
        ws_url = ws_url.join("/ws").copy_merge_params({"clientId": client_id})
        while time.monotonic() < deadline:
            try:
                async with connect(str(ws_url), additional_headers=self._headers(), max_size=16 * 2**20) as socket:
                    unreachable_since = None
                    if prompt_id is None:
                        assert submit is not None
                        await self._registered(socket)
                        prompt_id = await submit()
                    state, entry, ahead = await self._state(client, prompt_id)  # after connecting: no event is missed
                    if state == "done":
                        assert entry is not None
                        return self._ended(entry, prompt_id, workflow)
                    if state == "gone":
                        raise ProviderError(
                            NAME,
                            f"ComfyUI no longer knows prompt {prompt_id} (it restarted, or the prompt was deleted); "
                            "it was not queued again. Run the job again.",
                        )
                    self._waiting(ctx, state, ahead)
                    async for message in socket:
                        if isinstance(message, bytes):
                            frame = preview_frame(message, prompt_id)
                            if frame is not None:  # the pipeline keeps the latest, re-encoded (never the event log)
                                ctx.preview(frame)
                            continue
                        ended = await self._on_message(client, json.loads(message), prompt_id, ctx)
                        if ended:
                            break
                    # the socket closed or our prompt ended: the history says which
                    state, entry, ahead = await self._state(client, prompt_id)
                    if state == "done":
                        assert entry is not None
                        return self._ended(entry, prompt_id, workflow)
                    ctx.log("ComfyUI's socket closed while the prompt runs; connecting again")
            except (OSError, WebSocketException, httpx.TransportError) as error:
                if prompt_id is None:  # nothing queued yet
                    raise ProviderError(NAME, f"ComfyUI at {self.base_url} cannot be reached: {error}", transient=True) from error
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > RECONNECT_FOR:
                    raise ProviderError(
                        NAME, f"ComfyUI at {self.base_url} has not answered for {RECONNECT_FOR:g} s: {error}"
                    ) from error
                ctx.log(f"ComfyUI cannot be reached ({error}); trying again")
                await asyncio.sleep(min(2.0, self.settings.poll_interval))
        raise ProviderError(NAME, f"ComfyUI prompt {prompt_id} did not finish within {MAX_WAIT / 60:g} minutes", transient=True)

    @staticmethod
    async def _registered(socket: ClientConnection) -> None:
        """Wait for the `status` message ComfyUI sends a new socket once it is registered under our
        client id (server.py's websocket_handler): events of a prompt queued before would be lost."""
        async with asyncio.timeout(30):
            async for message in socket:
                if isinstance(message, str) and json.loads(message).get("type") == "status":
                    return

    def _waiting(self, ctx: StepContext, state: str, ahead: int) -> None:
        """The queue position in the step's log, when it changed."""
        if state == "queued" and self._told.get(id(ctx)) != ahead:
            self._told[id(ctx)] = ahead
            message = f"waiting in ComfyUI's queue: {ahead} prompt{'s' if ahead != 1 else ''} ahead"
            ctx.log(message)
            ctx.progress(0.0, message)

    async def _on_message(self, client: httpx.AsyncClient, message: dict[str, Any], prompt_id: str, ctx: StepContext) -> bool:
        """One JSON event; True when it ends our prompt."""
        kind, data = message.get("type"), message.get("data") or {}
        if kind == "status":
            state, _, ahead = await self._state(client, prompt_id)
            self._waiting(ctx, state, ahead)
            return state == "gone"  # a prompt that ended says so in its own events, which follow
        if data.get("prompt_id") != prompt_id:
            return False
        if kind == "execution_start":
            ctx.log("ComfyUI started the prompt")
            ctx.progress(0.02, "running on ComfyUI")
        elif kind == "progress" and data.get("max"):
            value, maximum = int(data.get("value", 0)), int(data["max"])
            ctx.progress(0.02 + 0.88 * min(1.0, value / maximum))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            return True
        elif kind == "executing" and data.get("node") is None:
            return True
        return False

    def _ended(self, entry: dict[str, Any], prompt_id: str, workflow: Workflow) -> dict[str, Any]:
        """The history entry of a prompt that succeeded; a ProviderError naming the node and ComfyUI's words otherwise."""
        status = entry.get("status") or {}
        if status.get("status_str") == "success" or (status.get("completed") and status.get("status_str") != "error"):
            return entry
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                node_type = data.get("node_type") or workflow.node_type(data.get("node_id", ""))
                words = str(data.get("exception_message", "")).strip().replace("\n", " ")
                raise ProviderError(NAME, f"ComfyUI failed in {node_type} (node {data.get('node_id')}): {words}")
            if kind == "execution_interrupted":
                raise ProviderError(
                    NAME, f"ComfyUI interrupted prompt {prompt_id} in {data.get('node_type')}", code="PROVIDER_CANCELLED"
                )
        raise ProviderError(NAME, f"ComfyUI ended prompt {prompt_id} with status {status.get('status_str')!r}")

    async def _fetch(
        self,
        client: httpx.AsyncClient,
        entry: dict[str, Any],
        workflow: Workflow,
        kind: Literal["image", "video"],
        ctx: StepContext,
    ) -> list[Path]:
        """The output node's files, downloaded from /view into a folder beside the step's files."""
        output = (entry.get("outputs") or {}).get(workflow.output) or {}
        items = [item for key in ("images", "gifs", "videos") for item in output.get(key, []) if isinstance(item, dict)]
        if not items:
            raise ProviderError(
                NAME, f"ComfyUI's prompt has no output from node {workflow.output} ({workflow.node_type(workflow.output)})"
            )
        folder = Path(self.settings.data_dir) / "tmp" / f"comfyui-{uuid.uuid4().hex}"
        folder.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        try:
            await self._download_all(items if kind == "video" else items[:1], folder, files, kind, ctx)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return files

    async def _download_all(
        self, items: list[dict[str, Any]], folder: Path, files: list[Path], kind: Literal["image", "video"], ctx: StepContext
    ) -> None:
        urls = OutputUrlPolicy(self.base_url, provider=NAME, label=LABEL, allow_private=self.settings.allow_private_output_urls)
        for index, item in enumerate(items):
            filename = str(item.get("filename", ""))
            params = {"filename": filename, "subfolder": str(item.get("subfolder", "")), "type": str(item.get("type", "output"))}
            url = str(httpx.URL(f"{self.base_url}/view", params=params))
            suffix = Path(filename).suffix.lower()[:8] if Path(filename).suffix.isascii() else ""
            dest = folder / f"{index:05}{suffix}"
            await download(
                url, dest, kind=kind, limits=self.limits, urls=urls, ctx=ctx, provider=NAME, label=LABEL,
                policy=self.policy, timeout=httpx.Timeout(60.0, connect=10.0), headers=self._headers(),
            )  # fmt: skip
            files.append(dest)

    async def cancel_remote(self, remote_id: str) -> None:
        """Delete the prompt from ComfyUI's queue while it waits; interrupt it while it runs (only
        when the running prompt is ours: /interrupt stops whatever runs)."""
        async with self._client() as client:
            state, _, _ = await self._state(client, remote_id)
            if state == "queued":
                response = await client.post("/queue", json={"delete": [remote_id]})
            elif state == "running":
                response = await client.post("/interrupt", json={"prompt_id": remote_id})
            else:
                return
            if response.status_code != 200:
                raise self._answer(response, f"cancelling prompt {remote_id}")


__all__ = ["IMAGE_MODEL", "VIDEO_MODEL", "ComfyUIProvider", "WorkflowError"]
