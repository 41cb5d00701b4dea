"""The `promptreel` command: serve (the default), generate one job, list stored jobs."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from backend.errors import ApiError
from backend.jobs.request import (
    DEFAULT_MOTION_PROMPT,
    IMAGE_PROVIDER_NAMES,
    IMAGE_SIZES,
    MAX_SEED,
    MODEL_QUALITIES,
    QUALITIES,
    describe,
    validate_request,
)
from backend.jobs.service import choose_models
from backend.providers.catalog import Catalog, CatalogError
from backend.providers.registry import ProviderRegistry
from backend.settings import Settings
from backend.store.models import JobStatus


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number, not {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be between 0 and {MAX_SEED}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, not {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("port must be between 1 and 65535")
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


#: The request's fields by the options that set them, for messages about them.
OPTION_OF_FIELD = {
    "settings.videoDuration": "--duration",
    "settings.imageModel": "--image-model",
    "settings.videoModel": "--video-model",
    "settings.imageSize": "--size",
    "settings.quality": "--quality",
}


def cli_words(message: str) -> str:
    """A service message as the command line says it: '--duration: ...' for 'settings.videoDuration: ...'."""
    for field, option in OPTION_OF_FIELD.items():
        if message.startswith(field):
            return option + message[len(field) :]
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="promptreel", description="Prompt in, image and short video out.")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    serve = commands.add_parser("serve", help="serve the studio, the REST API and /ws (the default)")
    serve.add_argument("--host", help="address to listen on (PROMPTREEL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (PROMPTREEL_PORT, default 8000)")
    serve.add_argument("--native", action="store_true", help="open the studio in a desktop window (promptreel[native])")

    generate = commands.add_parser("generate", help="run one job here, with live progress, and save its files")
    generate.add_argument("prompt", nargs="?", help="the scene; with --image, how it moves (optional there)")
    generate.add_argument("--provider", choices=IMAGE_PROVIDER_NAMES, help="image provider (default: local)")
    generate.add_argument("--image", type=Path, help="animate this picture (PNG, JPEG, WebP) instead of generating one")
    generate.add_argument("--fit", choices=("crop", "contain"), default="crop", help="how --image meets --size (default: crop)")
    generate.add_argument(
        "--video-provider",
        choices=("runway", "replicate", "local", "comfyui"),
        help="default: runway when configured, else local",
    )
    generate.add_argument("--size", default="1024x1024", choices=IMAGE_SIZES)
    generate.add_argument("--duration", default=5, type=_positive, help="seconds the video model allows (5 or 10 by default)")
    generate.add_argument("--quality", default="standard", choices=QUALITIES + MODEL_QUALITIES)
    generate.add_argument("--image-model", help="a catalog model id (promptreel models); default: the provider's")
    generate.add_argument("--video-model", help="a catalog model id (promptreel models); default: the provider's")
    generate.add_argument("--seed", type=_seed, help="same prompt and seed give the same local image")
    generate.add_argument("-o", "--output", type=Path, default=Path("."), help="folder for the image and video (default: here)")

    worker = commands.add_parser("worker", help="run queued jobs (a cluster: PROMPTREEL_TASK_ENGINE=procrastinate)")
    worker.add_argument("--concurrency", type=_positive, help="jobs run at once (PROMPTREEL_WORKER_CONCURRENCY, default 4)")

    models = commands.add_parser("models", help="list the model catalog: what each model takes, costs, and whether it runs now")
    models.add_argument("--kind", choices=("image", "video"))
    models.add_argument("--provider", choices=(*IMAGE_PROVIDER_NAMES, "runway"))

    jobs = commands.add_parser("jobs", help="list stored jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--status", choices=[status.value for status in JobStatus])

    commands.add_parser("webhook-secret", help="print the secret webhook deliveries are signed with (whsec_...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")  # `promptreel` and `promptreel --native` serve
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        settings = Settings()
    except ValidationError as error:  # a bad variable in the environment or .env
        reasons = "; ".join(str(problem["msg"]).removeprefix("Value error, ") for problem in error.errors())
        print(f"promptreel: error: invalid settings: {reasons}", file=sys.stderr)
        return 2
    try:  # a bad catalog file stops every command at once, with the file, entry and field in one line
        Catalog.load(settings.models_file)
    except CatalogError as error:
        print(f"promptreel: error: invalid model catalog: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from .server import serve

        if args.host:
            settings.host = args.host
        if args.port:
            settings.port = args.port
        if not is_loopback(settings.host) and not settings.users and not settings.allow_unauthenticated:
            print(
                f"promptreel: error: serving on {settings.host} would let anyone who reaches it use your API keys. "
                "Set API_TOKEN (or API_TOKENS), or PROMPTREEL_ALLOW_UNAUTHENTICATED=true if a proxy in front authenticates.",
                file=sys.stderr,
            )
            return 2
        serve(settings, native=args.native)
        return 0
    if args.command == "generate":
        from .generate import run_generate

        if args.image is not None and args.provider is not None:
            parser.error("--image animates your picture: leave out --provider")
        if args.image is not None and not args.image.is_file():
            parser.error(f"--image: no such file: {args.image}")
        if args.prompt is None and args.image is None:
            parser.error("prompt: describe a scene first (or give --image to animate your own picture)")
        job_settings: dict[str, Any] = {
            "imageSize": args.size,
            "videoDuration": args.duration,
            "quality": args.quality,
            "seed": args.seed,
        }
        if args.image is not None:
            job_settings["fit"] = args.fit
        if args.video_provider:
            job_settings["videoProvider"] = args.video_provider
        if args.image_model:
            job_settings["imageModel"] = args.image_model
        if args.video_model:
            job_settings["videoModel"] = args.video_model
        request_data = {
            "prompt": DEFAULT_MOTION_PROMPT if args.prompt is None else args.prompt,
            "provider": "upload" if args.image is not None else args.provider or "local",
            "settings": job_settings,
        }
        try:
            request = validate_request(request_data)
        except ValidationError as error:
            parser.error(describe(error.errors())[0])
        try:  # the models and what they take, before anything is opened
            choose_models(ProviderRegistry(settings, start_checks=False), request)
        except ApiError as error:
            parser.error(cli_words(error.message))
        try:
            return asyncio.run(run_generate(settings, request, args.output, image=args.image))
        except ApiError as error:
            print(f"promptreel: error: {cli_words(error.message)}", file=sys.stderr)
            return 2
    if args.command == "worker":
        from .worker import run_worker

        return asyncio.run(run_worker(settings, args.concurrency or settings.worker_concurrency))
    if args.command == "models":
        from .model_table import print_models

        print_models(settings, kind=args.kind, provider=args.provider)
        return 0
    if args.command == "jobs":
        from .job_table import print_jobs

        print_jobs(settings, limit=args.limit, status=args.status)
        return 0
    if args.command == "webhook-secret":
        from backend.webhooks.signing import load_webhook_secret

        try:
            print(load_webhook_secret(settings))
        except ValueError as error:
            print(f"promptreel: error: {error}", file=sys.stderr)
            return 2
        return 0
    parser.error(f"unknown command {args.command!r}")
