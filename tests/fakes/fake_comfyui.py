"""A fake ComfyUI, written from ComfyUI's server.py (PromptServer) and execution.py's messages.

Routes: POST /prompt (validates the graph like `execution.validate_prompt`: an unknown node class is
an `invalid_prompt` error, a model file that is not in its folder a node error; answers `prompt_id`,
`number`, `node_errors`), GET/POST /queue (`queue_running`/`queue_pending` items `[number, prompt_id,
prompt, extra_data, outputs]`; `delete`, `clear`), POST /interrupt (with a `prompt_id`, only when that
prompt runs), GET /history/{id}, GET /view, POST /upload/image (multipart `image`), GET /object_info
and /object_info/{class}, GET /models/{folder}, GET /system_stats, and /ws?clientId= with ComfyUI's
JSON messages (`status`, `execution_start`, `execution_cached`, `executing`, `progress`, `executed`,
`execution_success`, `execution_error`, `execution_interrupted`) sent to the prompt's client, and its
binary preview frames after each sampling step's `progress` (`>I` event 1 = PREVIEW_IMAGE, `>I` image type
1 = JPEG or 2 = PNG as `preview_format` says, then a real image of that format).

Outputs are real: SaveImage writes a PNG of the latent's size, SaveAnimatedWEBP an animated WebP of
`length` frames at the node's fps (promptreel transcodes it to H.264 MP4).

Switches: `hold_queue` (prompts stay pending), `steps` and `step_seconds` (sampling's length and pace),
`preview_format`, `pause_at_step` (the running prompt waits at that
sampling step until `release()`), `fail_node_type` (an execution_error there), `drop_sockets()` (the
sockets close, the prompt runs on), `restart()` (sockets closed, queue and history lost, as a ComfyUI
process restart loses them), `remove_model()` / `remove_node()` (a missing model or custom node).
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import uuid
from typing import Any

import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .base import FakeServer
from .media import png_image

PREVIEW_IMAGE = 1  # server.py BinaryEventTypes.PREVIEW_IMAGE
IMAGE_TYPES = {"JPEG": 1, "PNG": 2}  # server.py send_image: type_num 1 = JPEG, 2 = PNG

NODE_CLASSES = {
    "CheckpointLoaderSimple",
    "EmptyLatentImage",
    "CLIPTextEncode",
    "VAEDecode",
    "SaveImage",
    "SamplerCustom",
    "KSamplerSelect",
    "SDTurboScheduler",
    "CLIPLoader",
    "LoadImage",
    "LTXVImgToVideo",
    "LTXVConditioning",
    "LTXVScheduler",
    "SaveAnimatedWEBP",
}
MODELS = {
    "checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors", "ltx-video-2b-v0.9.5.safetensors"],
    "text_encoders": ["t5xxl_fp16.safetensors"],
    "vae": [],
    "loras": [],
    "diffusion_models": [],
}
#: Which input of a loader names a file of which folder (as nodes.py's INPUT_TYPES list them).
LOADER_INPUTS = {"ckpt_name": "checkpoints", "clip_name": "text_encoders", "vae_name": "vae", "unet_name": "diffusion_models"}
SAMPLERS = {"SamplerCustom", "KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced"}


def webp_animation(width: int, height: int, frames: int, fps: float) -> bytes:
    """An animated WebP (what SaveAnimatedWEBP writes) of a bar sweeping over a gradient."""
    base = np.zeros((height, width, 3), dtype=np.uint8)
    base[..., 0] = np.linspace(30, 200, width, dtype=np.uint8)[None, :]
    base[..., 2] = np.linspace(200, 30, height, dtype=np.uint8)[:, None]
    images = []
    for index in range(frames):
        frame = base.copy()
        left = index * max(1, width - 16) // max(1, frames - 1)
        frame[:, left : left + 16] = 255
        images.append(Image.fromarray(frame, "RGB"))
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="WEBP", save_all=True, append_images=images[1:], duration=round(1000 / fps), quality=60, method=0
    )
    return buffer.getvalue()


class FakeComfyUI(FakeServer):
    label = "ComfyUI"

    def __init__(self, token: str | None = None, steps: int = 4):
        super().__init__(token or "")
        self.token = token
        self.steps = steps
        self.node_classes = set(NODE_CLASSES)
        self.models = {folder: list(files) for folder, files in MODELS.items()}
        self.hold_queue = False
        self.pause_at_step: int | None = None
        self.fail_node_type: str | None = None
        self.paused = threading.Event()  # set while the running prompt waits at pause_at_step
        self._go = threading.Event()
        self.sockets: dict[str, WebSocket] = {}
        self.pending: list[list[Any]] = []
        self.running: list[Any] | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, filename) -> bytes
        self.interrupts: list[dict[str, Any]] = []
        self.previews_sent = 0
        self.preview_format = "JPEG"  # or "PNG"
        self.preview_times: list[float] = []  # time.monotonic() of each preview sent
        self.step_seconds = 0.0  # how long each sampling step takes (a GPU's pace)
        self.number = 0
        self.restarts = 0
        self._interrupt = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def routes(self) -> list[Any]:
        return [
            Route("/prompt", self.post_prompt, methods=["POST"]),
            Route("/queue", self.get_queue, methods=["GET"]),
            Route("/queue", self.post_queue, methods=["POST"]),
            Route("/interrupt", self.post_interrupt, methods=["POST"]),
            Route("/history/{prompt_id}", self.get_history),
            Route("/view", self.view),
            Route("/upload/image", self.upload_image, methods=["POST"]),
            Route("/object_info", self.object_info),
            Route("/object_info/{node_class}", self.object_info_node),
            Route("/models/{folder}", self.models_in),
            Route("/system_stats", self.system_stats),
            WebSocketRoute("/ws", self.websocket),
        ]

    # -- switches (from the test's thread) -------------------------------------------------

    def release(self) -> None:
        """Let held prompts start and a paused one sample on."""
        self.hold_queue = False
        self.pause_at_step = None
        self._go.set()
        self._poke()

    def run_queue(self) -> None:
        """Let held prompts start (a `pause_at_step` stays set)."""
        self.hold_queue = False
        self._poke()

    def remove_model(self, folder: str, filename: str) -> None:
        self.models[folder] = [name for name in self.models.get(folder, []) if name != filename]

    def remove_node(self, node_class: str) -> None:
        self.node_classes.discard(node_class)

    def drop_sockets(self) -> None:
        """Every /ws connection closes (a proxy or network drop); the prompt runs on."""
        self._call(self._close_sockets())

    def restart(self) -> None:
        """ComfyUI's process restarts: sockets closed, the queue, the running prompt and the history
        lost (PromptQueue lives in memory); output files stay on disk."""
        self.restarts += 1
        self.pending.clear()
        self.running = None
        self.history.clear()
        self._interrupt = True
        self._call(self._close_sockets())
        self.release()

    def _call(self, coroutine: Any) -> None:
        if self._loop is None:
            coroutine.close()
            return
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _poke(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _close_sockets(self) -> None:
        for socket in list(self.sockets.values()):
            try:
                await socket.close(code=1012)
            except RuntimeError:
                pass
        self.sockets.clear()

    # -- HTTP --------------------------------------------------------------------------

    def _authorized(self, request: Request | WebSocket) -> bool:
        if not self.token:
            return True
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def _ensure_executor(self) -> None:
        if self._executor is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._executor = asyncio.create_task(self._execute_forever())

    def _validate(self, prompt: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(error, node_errors) as execution.validate_prompt answers them."""
        for node_id, node in prompt.items():
            if node.get("class_type") not in self.node_classes:
                message = f"Cannot execute because node {node.get('class_type')} does not exist."
                return {"type": "invalid_prompt", "message": message, "details": f"Node ID '#{node_id}'", "extra_info": {}}, {}
        node_errors: dict[str, Any] = {}
        for node_id, node in prompt.items():
            for name, folder in LOADER_INPUTS.items():
                value = node.get("inputs", {}).get(name)
                if isinstance(value, str) and value not in self.models.get(folder, []):
                    node_errors[node_id] = {
                        "errors": [
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: '{value}' not in {self.models.get(folder, [])}",
                                "extra_info": {"input_name": name},
                            }
                        ],
                        "dependent_outputs": [],
                        "class_type": node["class_type"],
                    }
        if node_errors:
            error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""}
            return {**error, "extra_info": {}}, node_errors
        return None, {}

    async def post_prompt(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        self._ensure_executor()
        data = await request.json()
        number = self.number
        self.number += 1
        prompt = data.get("prompt")
        if not isinstance(prompt, dict):
            return JSONResponse({"error": "no prompt", "node_errors": []}, 400)
        error, node_errors = self._validate(prompt)
        if error is not None:
            return JSONResponse({"error": error, "node_errors": node_errors}, 400)
        extra_data = dict(data.get("extra_data") or {})
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        prompt_id = str(uuid.uuid4())
        outputs = [node_id for node_id, node in prompt.items() if node["class_type"] in ("SaveImage", "SaveAnimatedWEBP")]
        self.pending.append([number, prompt_id, prompt, extra_data, outputs])
        await self._send("status", {"status": self._queue_info()})
        assert self._wake is not None
        self._wake.set()
        self.notify()
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def get_queue(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        return JSONResponse({"queue_running": [self.running] if self.running else [], "queue_pending": list(self.pending)})

    async def post_queue(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        data = await request.json()
        if data.get("clear"):
            self.pending.clear()
        for prompt_id in data.get("delete", []):
            self.pending = [item for item in self.pending if item[1] != prompt_id]
        await self._send("status", {"status": self._queue_info()})
        self.notify()
        return Response(status_code=200)

    async def post_interrupt(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        try:
            data = await request.json()
        except ValueError:
            data = {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        self.interrupts.append({"prompt_id": prompt_id, "running": self.running[1] if self.running else None})
        if prompt_id is None or (self.running is not None and self.running[1] == prompt_id):
            self._interrupt = True
            self._go.set()
        self.notify()
        return Response(status_code=200)

    async def get_history(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        prompt_id = request.path_params["prompt_id"]
        entry = self.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry else {})

    async def view(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        query = request.query_params
        filename = query.get("filename", "")
        if not filename or filename[0] == "/" or ".." in filename:
            return Response(status_code=400)
        key = (query.get("type", "output"), query.get("subfolder", ""), filename)
        if key not in self.files:
            return Response(status_code=404)
        media = {"png": "image/png", "webp": "image/webp"}.get(filename.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(self.files[key], media_type=media)

    async def upload_image(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        async with request.form() as form:  # closes the upload's temporary file
            image = form.get("image")
            if image is None or isinstance(image, str) or not image.filename:
                return Response(status_code=400)
            kind = str(form.get("type") or "input")
            subfolder = str(form.get("subfolder") or "")
            self.files[(kind, subfolder, image.filename)] = await image.read()
        self.notify()
        return JSONResponse({"name": image.filename, "subfolder": subfolder, "type": kind})

    def _node_info(self, node_class: str) -> dict[str, Any]:
        required = {
            name: [self.models.get(folder, [])] for name, folder in LOADER_INPUTS.items() if node_class.endswith("Loader")
        }
        return {
            "input": {"required": required},
            "output": [],
            "name": node_class,
            "display_name": node_class,
            "category": "sd",
            "output_node": node_class.startswith("Save"),
        }

    async def object_info(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        return JSONResponse({name: self._node_info(name) for name in sorted(self.node_classes)})

    async def object_info_node(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        name = request.path_params["node_class"]
        return JSONResponse({name: self._node_info(name)} if name in self.node_classes else {})

    async def models_in(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        folder = request.path_params["folder"]
        if folder not in self.models:
            return Response(status_code=404)
        return JSONResponse(self.models[folder])

    async def system_stats(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        if (reply := await self.scripted("system_stats")) is not None:  # e.g. another server on the port
            return reply
        system = {"os": "posix", "ram_total": 34359738368, "ram_free": 17179869184, "comfyui_version": "0.3.40"}
        system |= {"python_version": "3.11.9", "pytorch_version": "2.5.1+cu124", "embedded_python": False, "argv": ["main.py"]}
        device = {"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0}
        device |= {"vram_total": 25757220864, "vram_free": 24000000000, "torch_vram_total": 0, "torch_vram_free": 0}
        return JSONResponse({"system": system, "devices": [device]})

    # -- WebSocket ------------------------------------------------------------------------

    async def websocket(self, socket: WebSocket) -> None:
        if not self._authorized(socket):
            await socket.close(code=1008)
            return
        self._ensure_executor()
        await socket.accept()
        sid = socket.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = socket
        self.notify()
        try:
            await socket.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            while True:
                await socket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self.sockets.get(sid) is socket:
                del self.sockets[sid]

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    async def _send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """server.py send_json: to one client when `sid` is given, else to all."""
        targets = [self.sockets[sid]] if sid is not None and sid in self.sockets else [] if sid else list(self.sockets.values())
        for socket in targets:
            try:  # a client that went away must not hold up the others (server.py's send_socket_catch_exception)
                await asyncio.wait_for(socket.send_json({"type": event, "data": data}), 2.0)
            except (
                Exception
            ):  # whatever the closed connection raises (uvicorn's ClientDisconnected, websockets' ConnectionClosed)
                pass

    def preview_image(self, step: int) -> bytes:
        """What the latent looks like at `step`: a gradient that sharpens into a disc, as the format says."""
        size = 128
        ys, xs = np.mgrid[0:size, 0:size]
        disc = ((xs - size / 2) ** 2 + (ys - size / 2) ** 2) < (size / 3) ** 2
        weight = step / max(1, self.steps)
        pixels = np.zeros((size, size, 3), dtype=np.uint8)
        pixels[..., 0] = (xs * 2 * (1 - weight) + disc * 230 * weight).clip(0, 255)
        pixels[..., 1] = 90
        pixels[..., 2] = (ys * 2).clip(0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format=self.preview_format, quality=80)
        return buffer.getvalue()

    async def _send_preview(self, sid: str | None, step: int) -> None:
        if sid is None or sid not in self.sockets:
            return
        header = struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", IMAGE_TYPES[self.preview_format])
        try:
            await self.sockets[sid].send_bytes(header + self.preview_image(step))
            self.previews_sent += 1
            self.preview_times.append(time.monotonic())
        except Exception:  # a closed connection, as in _send
            pass

    # -- execution -----------------------------------------------------------------------

    async def _execute_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending and not self.hold_queue:
                self.pending.sort(key=lambda item: item[0])
                item = self.pending.pop(0)
                self.running = item
                self._interrupt = False
                restarts = self.restarts
                try:
                    await self._execute(item, restarts)
                finally:
                    if self.restarts == restarts:
                        self.running = None
                    self.notify()

    async def _wait_go(self, restarts: int) -> bool:
        """Wait at a pause until released; False when the prompt was interrupted or lost."""
        self._go.clear()
        self.paused.set()
        self.notify()
        while not self._go.is_set():
            await asyncio.sleep(0.01)
        self.paused.clear()
        return not self._interrupt and self.restarts == restarts

    async def _execute(self, item: list[Any], restarts: int) -> None:
        number, prompt_id, prompt, extra_data, outputs_to_execute = item
        sid = extra_data.get("client_id")
        messages: list[list[Any]] = []

        async def event(kind: str, data: dict[str, Any]) -> None:
            data = {**data, "prompt_id": prompt_id}
            if kind.startswith("execution_"):
                data["timestamp"] = int(time.time() * 1000)
                messages.append([kind, data])
            await self._send(kind, data, sid)

        await event("execution_start", {})
        await event("execution_cached", {"nodes": []})
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        status = "success"
        for node_id, node in prompt.items():
            if self.restarts != restarts:
                return  # the process that ran it is gone
            await event("executing", {"node": node_id, "display_node": node_id})
            if node["class_type"] == self.fail_node_type:
                await event(
                    "execution_error",
                    {
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": "Allocation on device \nThis error means you ran out of memory on your GPU.",
                        "exception_type": "torch.OutOfMemoryError",
                        "traceback": ['  File "execution.py", line 327, in execute\n'],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
                status = "error"
                break
            if node["class_type"] in SAMPLERS:
                interrupted = False
                for step in range(1, self.steps + 1):
                    if self.pause_at_step == step and not await self._wait_go(restarts):
                        interrupted = True
                    if self._interrupt or self.restarts != restarts:
                        interrupted = True
                    if interrupted:
                        break
                    if self.step_seconds:
                        await asyncio.sleep(self.step_seconds)
                    await event("progress", {"value": step, "max": self.steps, "node": node_id})
                    await self._send_preview(sid, step)
                if self.restarts != restarts:
                    return
                if interrupted:
                    await event(
                        "execution_interrupted", {"node_id": node_id, "node_type": node["class_type"], "executed": executed}
                    )
                    status = "error"
                    break
            if node_id in outputs_to_execute:
                output = self._save(node_id, node, prompt)
                outputs[node_id] = output
                await event("executed", {"node": node_id, "display_node": node_id, "output": output})
            executed.append(node_id)
        if status == "success":
            await event("execution_success", {})
        self.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, outputs_to_execute],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {node_id: {"node_id": node_id, "display_node": node_id} for node_id in outputs},
        }
        await self._send("executing", {"node": None, "prompt_id": prompt_id}, sid)
        await self._send("status", {"status": self._queue_info()})

    def _save(self, node_id: str, node: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
        """What the output node writes, as its `ui` output: {"images": [{filename, subfolder, type}]}."""

        def size_input(name: str, default: int) -> int:
            for other in prompt.values():
                value = other.get("inputs", {}).get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return default

        width, height = size_input("width", 512), size_input("height", 512)
        counter = len(self.files) + 1
        if node["class_type"] == "SaveAnimatedWEBP":
            filename = f"promptreel_{counter:05}_.webp"
            fps = float(node["inputs"].get("fps", 6.0))
            self.files[("output", "", filename)] = webp_animation(width, height, size_input("length", 9), fps)
            return {"images": [{"filename": filename, "subfolder": "", "type": "output"}], "animated": [True]}
        filename = f"promptreel_{counter:05}_.png"
        self.files[("output", "", filename)] = png_image(width, height)
        return {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}
