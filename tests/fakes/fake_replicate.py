"""A fake Replicate HTTP API, after https://replicate.com/docs/reference/http.

- `Authorization: Bearer <token>` (the older `Token <token>` too); errors are RFC 7807 problem
  details `{"title", "detail", "status"}` (401 "Unauthenticated", 402 "Insufficient credit",
  404 "Not found", 422 "Input validation failed" with `invalid_fields`, 429 "Request was
  throttled." with `Retry-After`).
- `POST /v1/models/{owner}/{name}/predictions` with `{"input": {...}}` for the official FLUX.1
  and FLUX.2 models (`flux-2-pro`, `flux-2-max`: aspect_ratio, resolution in megapixels, seed,
  output_format ...), each input checked against the model's schema; answers 201 with the prediction.
- `GET /v1/predictions/{id}`: the prediction; each poll moves it one step along its plan
  (`starting` -> `processing`, logs with tqdm percentages -> `succeeded`), or to `failed`
  (NSFW), `aborted`; a "hold" prediction stays `processing` until `release()`.
- `POST /v1/predictions/{id}/cancel`: the prediction, now `canceled`.
- `GET /v1/account`: the account (what the key check asks).
- `GET /v1/models/{owner}/{name}`: the model, with its latest version's OpenAPI input schema
  (`latest_version.openapi_schema.components.schemas.Input`), or 404 "Not found" (the model
  check). `add_model()` serves one more model (a user's catalog entry), `remove_model()` takes
  one away (a model Replicate deleted).
- Outputs are served at `/files/...` without auth, as replicate.delivery does: a list of URLs
  for flux-schnell and flux-dev, one URL for the pro and FLUX.2 models; an MP4 of the input's `duration`
  (default 5) for the image-to-video model `wan-video/wan-2.5-i2v` (its input: prompt, image,
  duration up to 10, seed, resolution, negative_prompt).
- Hostile outcomes (a compromised provider or gateway): `huge_image` (a 13000x13000 PNG, small
  on the wire), `endless_output` (an output that never ends), `points_inside` (the output URL is
  `hostile_target`, an internal address), `redirects_inside` (the output redirects three times
  on the fake, then to `hostile_target`), `declares_huge` (a Content-Length of 500 MB, and then
  hardly a byte).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .base import FakeServer, Reply
from .media import mp4_video, png_image, solid_png

PROBLEM = "application/problem+json"
RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
PRO_RATIOS = ["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
FORMATS = ["webp", "jpg", "png"]
#: Output size of each aspect ratio at FLUX's one megapixel.
RATIO_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
}


def enum(*values: Any) -> dict[str, Any]:
    return {"enum": list(values)}


def integer(low: int | None = None, high: int | None = None) -> dict[str, Any]:
    return {"type": int, "min": low, "max": high}


# Input schemas of the official models (the fields their API pages list).
SCHNELL = {
    "prompt": {"type": str, "required": True},
    "aspect_ratio": enum(*RATIOS),
    "num_outputs": integer(1, 4),
    "num_inference_steps": integer(1, 4),
    "seed": integer(),
    "output_format": enum(*FORMATS),
    "output_quality": integer(0, 100),
    "disable_safety_checker": {"type": bool},
    "go_fast": {"type": bool},
    "megapixels": enum("1", "0.25"),
}
DEV = {
    **SCHNELL,
    "num_inference_steps": integer(1, 50),
    "guidance": {"type": (int, float)},
    "image": {"type": str},
    "prompt_strength": {"type": (int, float)},
}
PRO = {
    "prompt": {"type": str, "required": True},
    "aspect_ratio": enum(*PRO_RATIOS),
    "width": integer(256, 1440),
    "height": integer(256, 1440),
    "seed": integer(),
    "output_format": enum(*FORMATS),
    "output_quality": integer(0, 100),
    "safety_tolerance": integer(1, 6),
    "prompt_upsampling": {"type": bool},
    "image_prompt": {"type": str},
}
#: FLUX.2 [pro] and [max]: sized by aspect ratio and megapixels (or width/height with "custom"); one URL out.
FLUX2 = {
    "prompt": {"type": str, "required": True},
    "input_images": {"type": list},
    "aspect_ratio": enum("match_input_image", "custom", *PRO_RATIOS[1:]),
    "resolution": enum("match_input_image", "0.5 MP", "1 MP", "2 MP", "4 MP"),
    "width": integer(256, 2048),
    "height": integer(256, 2048),
    "seed": integer(),
    "output_format": enum(*FORMATS),
    "output_quality": integer(0, 100),
    "safety_tolerance": integer(1, 5),
    "prompt_upsampling": {"type": bool},
}
WAN_I2V = {
    "prompt": {"type": str, "required": True},
    "image": {"type": str, "required": True},
    "duration": integer(1, 10),
    "seed": integer(),
    "resolution": enum("480p", "720p", "1080p"),
    "negative_prompt": {"type": str},
}
#: The models whose output is a video.
VIDEO_MODELS = {"wan-video/wan-2.5-i2v"}
MODELS: dict[str, tuple[dict[str, Any], bool]] = {  # schema, whether the output is a list
    "wan-video/wan-2.5-i2v": (WAN_I2V, False),
    "black-forest-labs/flux-schnell": (SCHNELL, True),
    "black-forest-labs/flux-dev": (DEV, True),
    "black-forest-labs/flux-pro": (PRO, False),
    "black-forest-labs/flux-1.1-pro": (PRO, False),
    "black-forest-labs/flux-2-pro": (FLUX2, False),
    "black-forest-labs/flux-2-max": (FLUX2, False),
}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Reply:
    return Reply(status, {"title": title, "detail": detail, "status": status, **extra}, headers or {}, PROBLEM)


def throttled(retry_after: float = 1) -> Reply:
    return problem(
        429,
        "Request was throttled.",
        f"Request was throttled. Your rate limit resets in ~{retry_after:g}s.",
        {"Retry-After": f"{retry_after:g}"},
    )


def unavailable(status: int = 503) -> Reply:
    return problem(status, "Service Unavailable", "The service is temporarily unavailable. Please try again later.")


def insufficient_credit() -> Reply:
    return problem(
        402,
        "Insufficient credit",
        "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit. "
        "Once you purchase credit, please wait a few minutes before trying again.",
    )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    list_output: bool
    outcome: str  # succeed | nsfw | aborted | hold | output_gone | output_not_image | data_removed, or a hostile one
    polls: int = 0
    status: str = "starting"
    logs: str = ""
    output: Any = None
    error: str | None = None
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    completed_at: str | None = None
    released: threading.Event = field(default_factory=threading.Event)
    data_removed: bool = False


class FakeReplicate(FakeServer):
    label = "Replicate"

    def __init__(self, key: str = "r8_fake_replicate_token"):
        super().__init__(key)
        self.predictions: dict[str, Prediction] = {}
        #: Outcomes given to the next predictions, in order; then "succeed".
        self.outcomes: list[str] = []
        self.files: dict[str, bytes] = {}
        #: Where the hostile outcomes point the server (`points_inside`, `redirects_inside`).
        self.hostile_target: str | None = None
        #: The models served: id -> (input schema, whether the output is a list).
        self.models: dict[str, tuple[dict[str, Any], bool]] = dict(MODELS)

    def add_model(self, model: str, schema: dict[str, Any], list_output: bool = False) -> None:
        self.models[model] = (schema, list_output)

    def remove_model(self, model: str) -> None:
        self.models.pop(model, None)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/account", self.account, methods=["GET"]),
            Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
            Route("/v1/models/{owner}/{name}", self.model, methods=["GET"]),
            Route("/v1/predictions/{id}", self.get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/files/{id}/{name}", self.file, methods=["GET"]),
            Route("/redirect/{hops:int}", self.redirect, methods=["GET"]),
        ]

    def release(self, prediction_id: str | None = None) -> None:
        """Let held predictions (all, or one) finish at their next poll."""
        for prediction in self.predictions.values():
            if prediction_id in (None, prediction.id):
                prediction.released.set()

    def _auth(self, request: Request) -> Response | None:
        if not self.bearer_ok(request, ("Bearer", "Token")):
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token").response()
        return None

    def _public(self, prediction: Prediction) -> dict[str, Any]:
        base = f"{self.url}/v1/predictions/{prediction.id}"
        data: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "version": "hidden",
            "input": prediction.input,
            "logs": prediction.logs,
            "output": prediction.output,
            "data_removed": prediction.data_removed,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": prediction.created_at,
            "urls": {
                "cancel": f"{base}/cancel",
                "get": base,
                "stream": f"{self.url}/v1/streams/{prediction.id}",
                "web": f"https://replicate.com/p/{prediction.id}",
            },
        }
        if prediction.started_at:
            data["started_at"] = prediction.started_at
        if prediction.completed_at:
            data["completed_at"] = prediction.completed_at
            data["metrics"] = {"predict_time": 1.2, "total_time": 1.6}
        return data

    async def account(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (reply := await self.scripted("account")) is not None:
            return reply
        return JSONResponse({"type": "user", "username": "fake-user", "name": "Fake User", "github_url": None})

    async def model(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        owner, name = request.path_params["owner"], request.path_params["name"]
        if f"{owner}/{name}" not in self.models:
            return problem(404, "Not found", "The requested resource could not be found.").response()
        schema, _ = self.models[f"{owner}/{name}"]
        properties: dict[str, Any] = {}
        for field_name, rule in schema.items():
            kind = rule.get("type")
            described: dict[str, Any] = {"title": field_name.replace("_", " ").title()}
            if "enum" in rule:
                described["enum"] = rule["enum"]
            elif kind is int:
                described["type"] = "integer"
                described.update({k: v for k, v in (("minimum", rule.get("min")), ("maximum", rule.get("max"))) if v is not None})
            elif kind is bool:
                described["type"] = "boolean"
            elif kind is str:
                described["type"] = "string"
            elif kind is list:
                described["type"] = "array"
            else:
                described["type"] = "number"
            properties[field_name] = described
        required = [field_name for field_name, rule in schema.items() if rule.get("required")]
        version = {
            "id": secrets.token_hex(32),
            "created_at": now(),
            "openapi_schema": {
                "components": {"schemas": {"Input": {"type": "object", "properties": properties, "required": required}}}
            },
        }
        return JSONResponse(
            {
                "url": f"https://replicate.com/{owner}/{name}",
                "owner": owner,
                "name": name,
                "description": "",
                "visibility": "public",
                "run_count": 0,
                "latest_version": version,
            }
        )

    async def create(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (reply := await self.scripted("create")) is not None:
            return reply
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        if model not in self.models:
            return problem(404, "Not found", "The requested resource could not be found.").response()
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "Bad request", "The request body is not valid JSON.").response()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return problem(
                422,
                "Input validation failed",
                "- input: input is required",
                invalid_fields=[{"type": "required", "field": "input", "description": "input is required"}],
            ).response()
        schema, list_output = self.models[model]
        invalid = validate_input(body["input"], schema)
        if invalid:
            detail = "".join(f"- {item['field']}: {item['description']}\n" for item in invalid)
            return problem(422, "Input validation failed", detail, invalid_fields=invalid).response()
        alphabet = string.ascii_lowercase + string.digits
        prediction_id = "".join(secrets.choice(alphabet) for _ in range(26))
        outcome = self.outcomes.pop(0) if self.outcomes else "succeed"
        prediction = Prediction(prediction_id, model, body["input"], list_output, outcome)
        self.predictions[prediction_id] = prediction
        self.notify()
        return JSONResponse(self._public(prediction), 201)

    async def get(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (reply := await self.scripted("poll")) is not None:
            return reply
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found.").response()
        self._advance(prediction)
        self.notify()
        return JSONResponse(self._public(prediction))

    def _advance(self, prediction: Prediction) -> None:
        """One poll moves the prediction one step: starting, processing (twice), then its end."""
        if prediction.status in ("succeeded", "failed", "canceled", "aborted"):
            return
        prediction.polls += 1
        seed = prediction.input.get("seed", 1234)
        if prediction.outcome == "aborted":
            prediction.status, prediction.completed_at = "aborted", now()
            return
        if prediction.polls == 1:
            return  # still starting
        if prediction.polls == 2 or (prediction.outcome == "hold" and not prediction.released.is_set()):
            prediction.status, prediction.started_at = "processing", prediction.started_at or now()
            prediction.logs = (
                f"Using seed: {seed}\nrunning quantized prediction\n"
                "  0%|          | 0/4 [00:00<?, ?it/s]\n 50%|█████     | 2/4 [00:00<00:00,  7.41it/s]\n"
            )
            return
        prediction.completed_at = now()
        if prediction.outcome == "nsfw":
            prediction.status = "failed"
            prediction.error = "NSFW content detected. Try running it again, or try a different prompt."
            return
        prediction.logs += "100%|██████████| 4/4 [00:00<00:00,  8.02it/s]\n"
        prediction.status = "succeeded"
        ratio = prediction.input.get("aspect_ratio", "1:1")
        width, height = RATIO_SIZES.get(ratio, (1024, 1024))
        if isinstance(prediction.input.get("width"), int) and isinstance(prediction.input.get("height"), int):
            width, height = prediction.input["width"], prediction.input["height"]  # a model sized by width and height
        name = f"out-0.{prediction.input.get('output_format', 'webp')}"
        if prediction.model in VIDEO_MODELS:
            name = "output.mp4"
            self.files[f"{prediction.id}/{name}"] = mp4_video(1280, 720, int(prediction.input.get("duration", 5)))
        elif prediction.outcome == "output_not_image":
            self.files[f"{prediction.id}/{name}"] = b"<html><body>Not an image</body></html>"
        elif prediction.outcome == "huge_image":
            self.files[f"{prediction.id}/{name}"] = solid_png(13000, 13000)
        else:
            self.files[f"{prediction.id}/{name}"] = png_image(width, height)
        url = f"{self.files_url}/files/{prediction.id}/{name}"
        if prediction.outcome == "points_inside":
            url = str(self.hostile_target)
        elif prediction.outcome == "redirects_inside":
            url = f"{self.files_url}/redirect/3"
        prediction.output = [url] if prediction.list_output else url
        if prediction.outcome == "data_removed":
            prediction.data_removed, prediction.output = True, None

    async def cancel(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (reply := await self.scripted("cancel")) is not None:
            return reply
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found.").response()
        if prediction.status in ("starting", "processing"):
            prediction.status, prediction.completed_at = "canceled", now()
        self.notify()
        return JSONResponse(self._public(prediction))

    async def file(self, request: Request) -> Response:
        if (reply := await self.scripted("files")) is not None:
            return reply
        key = f"{request.path_params['id']}/{request.path_params['name']}"
        prediction = self.predictions.get(request.path_params["id"])
        if prediction and prediction.outcome == "endless_output":
            return StreamingResponse(endless_png(), media_type="image/png")  # no Content-Length: it never ends
        if prediction and prediction.outcome == "declares_huge":  # says 500 MB, then sends next to nothing
            headers = {"Content-Length": str(500 * 2**20)}
            return StreamingResponse(trickle_png(request), media_type="image/png", headers=headers)
        if key not in self.files or (prediction and prediction.outcome == "output_gone"):
            return Response("Not Found", 404, media_type="text/plain")
        media_type = "text/html" if prediction and prediction.outcome == "output_not_image" else "image/png"
        if key.endswith(".mp4"):
            media_type = "video/mp4"
        return Response(self.files[key], media_type=media_type)

    async def redirect(self, request: Request) -> Response:
        """A chain of redirects on the fake itself, ending at `hostile_target`."""
        hops = request.path_params["hops"]
        target = f"{self.files_url}/redirect/{hops - 1}" if hops > 1 else str(self.hostile_target)
        return Response(status_code=302, headers={"Location": target})


async def endless_png() -> AsyncIterator[bytes]:
    """A PNG signature followed by zeros, one megabyte at a time, until the client goes away."""
    yield b"\x89PNG\r\n\x1a\n"
    chunk = bytes(2**20)
    while True:
        yield chunk
        await asyncio.sleep(0)


async def trickle_png(request: Request) -> AsyncIterator[bytes]:
    """A PNG signature, then nothing until the client goes away (a minute at most)."""
    yield b"\x89PNG\r\n\x1a\n"
    for _ in range(600):
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.1)


def validate_input(data: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    invalid: list[dict[str, str]] = []
    for name, rule in schema.items():
        if rule.get("required") and name not in data:
            invalid.append({"type": "required", "field": "input", "description": f"{name} is required"})
    for name, value in data.items():
        rule = schema.get(name)
        if rule is None:  # stricter than Replicate, which ignores unknown inputs: a typo here is a bug
            invalid.append(
                {
                    "type": "additional_property_not_allowed",
                    "field": "input",
                    "description": f"Additional property {name} is not allowed",
                }
            )
            continue
        if "enum" in rule:
            if value not in rule["enum"]:
                allowed = ", ".join(f'"{option}"' for option in rule["enum"])
                invalid.append(
                    {"type": "enum", "field": f"input.{name}", "description": f"{name} must be one of the following: {allowed}"}
                )
            continue
        kind = rule.get("type")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            invalid.append(
                {
                    "type": "invalid_type",
                    "field": f"input.{name}",
                    "description": f"Invalid type. Expected: integer, given: {type(value).__name__}",
                }
            )
        elif kind is not None and kind is not int and not isinstance(value, kind):
            invalid.append({"type": "invalid_type", "field": f"input.{name}", "description": f"Invalid type for {name}"})
        elif kind is int:
            if rule.get("min") is not None and value < rule["min"]:
                invalid.append(
                    {
                        "type": "number_gte",
                        "field": f"input.{name}",
                        "description": f"Must be greater than or equal to {rule['min']}",
                    }
                )
            if rule.get("max") is not None and value > rule["max"]:
                invalid.append(
                    {
                        "type": "number_lte",
                        "field": f"input.{name}",
                        "description": f"Must be less than or equal to {rule['max']}",
                    }
                )
    return invalid
