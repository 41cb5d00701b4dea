"""A fake OpenAI images API, after https://platform.openai.com/docs/api-reference/images/create
and the `openai` SDK's types (image_generate_params.py, images_response.py).

- `POST /v1/images/generations` with `Authorization: Bearer <key>`, a JSON body of
  `prompt, model, n, quality, size, output_format, background, moderation, ...`. GPT image models
  (`gpt-image-2`, `gpt-image-1.5`, `gpt-image-1-mini`): quality low, medium, high or auto;
  `gpt-image-2` any WxH with both sides divisible by 16, a ratio between 1:3 and 3:1 and at most
  3840 a side, the others 1024x1024, 1536x1024 or 1024x1536; `response_format` is refused (they
  always answer base64). The answer is `{"created", "data": [{"b64_json"}], "size", "quality",
  "output_format", "usage": {input_tokens, input_tokens_details {text_tokens, image_tokens},
  output_tokens, output_tokens_details, total_tokens}}`.
- `dall-e-3` was shut down on 2026-05-12 and `gpt-image-1` on 2026-10-23: asking for either
  answers 404 `model_not_found`, as OpenAI does for a model that no longer exists (`dall-e-2`
  is still served, as before).
- `GET /v1/models/{model}`: the model object (what the key and model checks ask), or that 404.
- Errors are `{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes:
  401 `invalid_api_key`, 400 `content_policy_violation`, 429 `rate_limit_exceeded` (with
  `retry-after`) or `insufficient_quota`, 400 `billing_hard_limit_reached`, 500 `server_error`.
- Image URLs (`response_format=url`) are served at `/files/...` without auth, as OpenAI's blob
  storage does; `expire_urls()` makes them answer 403 as an expired link does.
- `latency` (seconds, default 0) holds every image answer that long, as the real API takes its
  time to draw: a fixed cost per call, for benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import FakeServer, Reply
from .media import png_image

DALLE2_SIZES = ["256x256", "512x512", "1024x1024"]
GPT_IMAGE_1_SIZES = ["1024x1024", "1536x1024", "1024x1536", "auto"]
KNOWN_FIELDS = {
    "prompt",
    "model",
    "n",
    "quality",
    "response_format",
    "size",
    "style",
    "user",
    "output_format",
    "output_compression",
    "background",
    "moderation",
    "partial_images",
    "stream",
}
MODELS = {"dall-e-2": 1698798177, "gpt-image-2": 1776729600, "gpt-image-1.5": 1765238400, "gpt-image-1-mini": 1759708800}
GPT_IMAGE_MODELS = {"gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini"}
#: Output tokens of a 1024x1024 image by quality (OpenAI's image generation guide, for GPT image
#: models); other sizes scale with their area.
OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}


def usage_for(prompt: str, size: str, quality: str) -> dict[str, Any]:
    """The `usage` of an answer: text tokens for the prompt, image tokens for the output."""
    width, height = (int(part) for part in size.split("x"))
    text_tokens = max(1, len(prompt) // 4)
    output = round(OUTPUT_TOKENS[quality] * width * height / (1024 * 1024))
    return {
        "input_tokens": text_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
        "total_tokens": text_tokens + output,
    }


def model_not_found(model: str) -> Reply:
    """What OpenAI answers for a model it does not serve (any more)."""
    return error(
        404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found", param="model"
    )


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply(status, {"error": {"message": message, "type": type, "param": param, "code": code}}, headers or {})


# Replies a test can script, as OpenAI sends them.
def rate_limited(retry_after: float = 1) -> Reply:
    return error(
        429,
        "Rate limit exceeded for images per minute in organization org-fake. Limit: 5/1min. Current: 6/1min.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": f"{retry_after:g}"},
    )


def server_error() -> Reply:
    return error(500, "The server had an error while processing your request. Sorry about that!", type="server_error")


def content_policy() -> Reply:
    return error(
        400,
        "Your request was rejected as a result of our safety system."
        " Your prompt may contain text that is not allowed by our safety system.",
        code="content_policy_violation",
    )


def insufficient_quota() -> Reply:
    return error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def billing_hard_limit() -> Reply:
    return error(400, "Billing hard limit has been reached", code="billing_hard_limit_reached")


class FakeOpenAI(FakeServer):
    label = "OpenAI"

    def __init__(self, key: str = "sk-fake-openai", latency: float = 0.0):
        super().__init__(key)
        #: Seconds every successful image generation takes before it answers (0: at once).
        self.latency = latency
        self.files: dict[str, bytes] = {}
        self.urls_expired = False
        #: When set, the bytes every generated "image" has (to test an output that is not an image).
        self.image_override: bytes | None = None
        #: Force `url` answers even when `b64_json` was asked (to test the URL path).
        self.force_url = False
        #: Make noisy (large) PNGs instead of gradients.
        self.noisy = False
        #: The models served (id -> created); `retire()` shuts one down, as OpenAI did dall-e-3.
        self.models = dict(MODELS)

    def retire(self, model: str) -> None:
        self.models.pop(model, None)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self.generate, methods=["POST"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            Route("/files/{name}", self.file, methods=["GET"]),
        ]

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be."""
        return f"{self.url}/v1"

    def expire_urls(self) -> None:
        self.urls_expired = True

    def _auth(self, request: Request) -> Response | None:
        verdict = self.bearer_ok(request)
        if verdict is None:
            return error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header"
                " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            ).response()
        if not verdict:
            return error(
                401,
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            ).response()
        return None

    async def model(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (reply := await self.scripted("models")) is not None:
            return reply
        name = request.path_params["model"]
        if name not in self.models:
            return model_not_found(name).response()
        return JSONResponse({"id": name, "object": "model", "created": self.models[name], "owned_by": "system"})

    async def generate(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(
                400,
                "We could not parse the JSON body of your request."
                " (HINT: This likely means you aren't using your HTTP library correctly.)",
            ).response()
        if not isinstance(body, dict):
            return error(400, "Invalid type for the request body: expected an object.").response()
        if (reply := await self.scripted("images")) is not None:
            return reply
        problem = self._validate(body)
        if problem is not None:
            return problem.response()
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # the event loop's sleep: concurrent calls overlap, as at OpenAI
        model = body.get("model", "dall-e-2")
        size = body.get("size", "1024x1024")
        size = "1024x1024" if size == "auto" else size
        width, height = (int(part) for part in size.split("x"))
        data = self.image_override if self.image_override is not None else png_image(width, height, self.noisy)
        item: dict[str, Any] = {}
        answer: dict[str, Any] = {"created": int(time.time()), "data": [item]}
        if model in GPT_IMAGE_MODELS:
            quality = body.get("quality", "auto")
            answer.update(
                size=size,
                quality="high" if quality == "auto" else quality,
                output_format=body.get("output_format", "png"),
                usage=usage_for(body["prompt"], size, quality),
            )
        if (model in GPT_IMAGE_MODELS or body.get("response_format", "url") == "b64_json") and not self.force_url:
            item["b64_json"] = base64.b64encode(data).decode()
        else:
            name = f"img-{secrets.token_urlsafe(12)}.png"
            self.files[name] = data
            item["url"] = f"{self.files_url}/files/{name}?st=2024-01-15T10%3A30%3A00Z&se=2024-01-15T12%3A30%3A00Z&sp=r&sig=fake"
        return JSONResponse(answer)

    def _validate(self, body: dict[str, Any]) -> Reply | None:
        for name in body:
            if name not in KNOWN_FIELDS:
                return error(400, f"Unrecognized request argument supplied: {name}")
        prompt = body.get("prompt")
        if prompt is None:
            return error(400, "Missing required parameter: 'prompt'.", param="prompt")
        if not isinstance(prompt, str):
            return error(
                400,
                f"Invalid type for 'prompt': expected a string, but got {type(prompt).__name__} instead.",
                param="prompt",
                code="invalid_type",
            )
        model = body.get("model", "dall-e-2")
        if model not in self.models:
            return model_not_found(model)
        if model in GPT_IMAGE_MODELS:
            return self._validate_gpt(body, model, prompt)
        limit = 1000
        if len(prompt) > limit:
            return error(
                400,
                f"'{prompt[:20]}...' is too long - 'prompt'. Maximum length is {limit} characters.",
                param="prompt",
                code="string_above_max_length",
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            return error(400, f"{n!r} is not valid - 'n'", param="n")
        sizes = DALLE2_SIZES
        size = body.get("size", "1024x1024")
        if size not in sizes:
            return error(400, f"'{size}' is not one of {sizes} - 'size'", param="size")
        quality = body.get("quality", "standard")
        if quality not in ("standard", "hd"):
            return error(400, f"'{quality}' is not one of ['standard', 'hd'] - 'quality'", param="quality")
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json"):
            return error(
                400, f"'{response_format}' is not one of ['url', 'b64_json'] - 'response_format'", param="response_format"
            )
        if "style" in body or "output_format" in body:
            name = "style" if "style" in body else "output_format"
            return error(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        return None

    def _validate_gpt(self, body: dict[str, Any], model: str, prompt: str) -> Reply | None:
        if len(prompt) > 32000:
            return error(400, "'prompt' is too long. Maximum length is 32000 characters.", param="prompt")
        for name in ("response_format", "style"):
            if name in body:
                return error(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            return error(400, f"{n!r} is not valid - 'n'", param="n")
        quality = body.get("quality", "auto")
        if quality not in OUTPUT_TOKENS:
            return error(
                400,
                f"Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
                param="quality",
                code="invalid_value",
            )
        size = body.get("size", "auto")
        if model == "gpt-image-2" and size != "auto":
            try:
                width, height = (int(part) for part in str(size).split("x"))
            except ValueError:
                width = height = 0
            if not (
                width
                and height
                and width % 16 == 0
                and height % 16 == 0
                and max(width, height) <= 3840
                and 1 / 3 <= width / height <= 3
            ):
                return error(
                    400,
                    f"Invalid size '{size}': both sides must be divisible by 16, at most 3840, "
                    "with an aspect ratio between 1:3 and 3:1.",
                    param="size",
                    code="invalid_value",
                )
        elif model != "gpt-image-2" and size not in GPT_IMAGE_1_SIZES:
            return error(
                400,
                f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.",
                param="size",
                code="invalid_value",
            )
        if body.get("output_format", "png") not in ("png", "jpeg", "webp"):
            return error(400, "Invalid value for 'output_format'.", param="output_format", code="invalid_value")
        return None

    async def file(self, request: Request) -> Response:
        if (reply := await self.scripted("files")) is not None:
            return reply
        name = request.path_params["name"]
        if self.urls_expired or name not in self.files:
            body = (
                '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
                "<Message>Signed expiry time has to be after signed start time</Message></Error>"
            )
            return Response(body, 403, media_type="application/xml")
        return Response(self.files[name], media_type="image/png")
