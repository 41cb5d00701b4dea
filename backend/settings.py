"""Settings from the environment and a `.env` file (pydantic-settings).

Provider variables keep the names of the providers' own SDKs, so a user's existing
environment works as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: API tokens shorter than this are refused at start.
MIN_TOKEN_LENGTH = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(Path("data"), validation_alias="PROMPTREEL_DATA_DIR")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    host: str = Field("127.0.0.1", validation_alias="PROMPTREEL_HOST")
    port: int = Field(8000, ge=1, le=65535, validation_alias="PROMPTREEL_PORT")
    #: Origins allowed by CORS; the guide's web interface runs on localhost:3000.
    cors_origins: Annotated[list[str], NoDecode] = Field(["http://localhost:3000"], validation_alias="PROMPTREEL_CORS_ORIGINS")
    #: Absolute base of the media URLs in job objects; default: the URL the request came in on.
    public_url: str | None = Field(None, validation_alias="PROMPTREEL_PUBLIC_URL")
    #: Signs the studio's session cookie; default: a random secret kept in the data dir (a cluster must share one).
    storage_secret: str | None = Field(None, validation_alias="PROMPTREEL_STORAGE_SECRET")
    #: Host names the service answers to besides loopback and PROMPTREEL_PUBLIC_URL's ("*": any).
    allowed_hosts: Annotated[list[str], NoDecode] = Field([], validation_alias="PROMPTREEL_ALLOWED_HOSTS")

    # Concurrency: how many steps may run at once per provider; the rest wait in the queue.
    local_concurrency: int = Field(1, ge=1, validation_alias="PROMPTREEL_LOCAL_CONCURRENCY")
    remote_concurrency: int = Field(4, ge=1, validation_alias="PROMPTREEL_REMOTE_CONCURRENCY")

    openai_api_key: str | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    replicate_api_token: str | None = Field(None, validation_alias="REPLICATE_API_TOKEN")
    replicate_base_url: str = Field("https://api.replicate.com", validation_alias="REPLICATE_BASE_URL")
    flux_model_standard: str = Field("black-forest-labs/flux-schnell", validation_alias="PROMPTREEL_FLUX_MODEL_STANDARD")
    flux_model_high: str = Field("black-forest-labs/flux-1.1-pro", validation_alias="PROMPTREEL_FLUX_MODEL_HIGH")
    runwayml_api_secret: str | None = Field(None, validation_alias=AliasChoices("RUNWAYML_API_SECRET", "RUNWAY_API_KEY"))
    runwayml_base_url: str = Field("https://api.dev.runwayml.com", validation_alias="RUNWAYML_BASE_URL")
    runway_model: str = Field("gen4_turbo", validation_alias="PROMPTREEL_RUNWAY_MODEL")
    runway_api_version: str = Field("2024-11-06", validation_alias="PROMPTREEL_RUNWAY_API_VERSION")
    #: A model catalog file that adds models or overrides built-in ones (backend/providers/models.toml's shape).
    models_file: Path | None = Field(None, validation_alias="PROMPTREEL_MODELS_FILE")
    # The user's ComfyUI (backend/providers/comfyui): its URL, a bearer token for a proxy in front,
    # workflow files (API-format JSON with a .toml mapping beside it) and prompts of ours at once.
    comfyui_url: str | None = Field(None, validation_alias="COMFYUI_URL")
    comfyui_token: str | None = Field(None, validation_alias="COMFYUI_TOKEN")
    comfyui_image_workflow: Path | None = Field(None, validation_alias="COMFYUI_IMAGE_WORKFLOW")
    comfyui_video_workflow: Path | None = Field(None, validation_alias="COMFYUI_VIDEO_WORKFLOW")
    comfyui_concurrency: int = Field(1, ge=1, validation_alias="COMFYUI_CONCURRENCY")
    #: Where `--native` looks for a ComfyUI on this machine when COMFYUI_URL is unset (empty: it does not look).
    comfyui_probe_url: str = Field("http://127.0.0.1:8188", validation_alias="PROMPTREEL_COMFYUI_PROBE_URL")
    #: Seconds between two heartbeats of a process that runs jobs (serve, worker, generate).
    heartbeat_seconds: float = Field(5.0, gt=0, validation_alias="PROMPTREEL_HEARTBEAT_SECONDS")
    #: A job whose process has not beaten for this long is stalled: another process picks it up.
    stalled_after_seconds: float = Field(15.0, gt=0, validation_alias="PROMPTREEL_STALLED_AFTER_SECONDS")
    #: Seconds between two polls of a remote task.
    poll_interval: float = Field(2.0, gt=0, validation_alias="PROMPTREEL_POLL_INTERVAL")
    #: Attempts of one remote call when it fails transiently (429, 5xx, dropped connection).
    retry_attempts: int = Field(4, ge=1, validation_alias="PROMPTREEL_RETRY_ATTEMPTS")
    #: First backoff delay in seconds (doubling, with jitter); default: half the poll interval, at most 1 s.
    retry_base_delay: float | None = Field(None, gt=0, validation_alias="PROMPTREEL_RETRY_BASE_DELAY")

    # Scale-out (docs/deployment.md). `procrastinate`: API instances queue jobs in PostgreSQL
    # and `promptreel worker` processes, on any host, run them.
    task_engine: Literal["inprocess", "procrastinate"] = Field("inprocess", validation_alias="PROMPTREEL_TASK_ENGINE")
    #: Jobs one `promptreel worker` runs at once (its --concurrency overrides it).
    worker_concurrency: int = Field(4, ge=1, validation_alias="PROMPTREEL_WORKER_CONCURRENCY")
    #: Stored events (for `GET /api/v1/jobs/{id}/events`) are kept this long.
    event_retention_hours: float = Field(72.0, gt=0, validation_alias="PROMPTREEL_EVENT_RETENTION_HOURS")

    # S3-compatible media storage: on when a bucket is named; credentials are boto3's usual
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE.
    s3_bucket: str | None = Field(None, validation_alias="PROMPTREEL_S3_BUCKET")
    s3_region: str | None = Field(None, validation_alias=AliasChoices("PROMPTREEL_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("PROMPTREEL_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    )
    #: Key prefix of every object promptreel writes.
    s3_prefix: str = Field("promptreel/", validation_alias="PROMPTREEL_S3_PREFIX")
    #: `stream`: the instance streams the object (works wherever the instance does);
    #: `redirect`: a short-lived presigned URL (the client must reach the S3 endpoint).
    s3_downloads: Literal["stream", "redirect"] = Field("stream", validation_alias="PROMPTREEL_S3_DOWNLOADS")
    s3_url_expiry_seconds: int = Field(300, ge=10, le=604800, validation_alias="PROMPTREEL_S3_URL_EXPIRY_SECONDS")

    # Security (docs/security.md). Authentication is on when a token is set.
    #: One user's token (the integration guide's name); that user is called "default".
    api_token: str | None = Field(None, validation_alias="API_TOKEN")
    #: Several users: "name:token,name:token". Names are what jobs are owned by.
    api_tokens: str | None = Field(None, validation_alias="API_TOKENS")
    #: Serve beyond loopback without authentication all the same (refused otherwise).
    allow_unauthenticated: bool = Field(False, validation_alias="PROMPTREEL_ALLOW_UNAUTHENTICATED")
    #: Signs media URLs; default: a random key kept in the data dir (a cluster must share one).
    secret_key: str | None = Field(None, validation_alias="PROMPTREEL_SECRET_KEY")
    #: How long a signed image/video URL works (s).
    media_url_seconds: int = Field(3600, ge=60, le=7 * 86400, validation_alias="PROMPTREEL_MEDIA_URL_SECONDS")
    #: Jobs one user may create per minute (0: no limit).
    rate_limit_per_minute: int = Field(30, ge=0, validation_alias="PROMPTREEL_RATE_LIMIT_PER_MINUTE")
    #: Unfinished jobs the service holds at most; more are refused with QUEUE_FULL.
    max_queued_jobs: int = Field(1000, ge=1, validation_alias="PROMPTREEL_MAX_QUEUED_JOBS")
    #: Largest request body accepted (bytes).
    max_body_bytes: int = Field(64 * 1024, ge=1024, validation_alias="PROMPTREEL_MAX_BODY_BYTES")
    #: Largest message a /ws client may send (bytes).
    max_ws_message_bytes: int = Field(4096, ge=256, validation_alias="PROMPTREEL_MAX_WS_MESSAGE_BYTES")
    #: Media older than this are removed (the job stays, marked expired); 0 keeps them forever.
    media_retention_days: float = Field(0, ge=0, validation_alias="PROMPTREEL_MEDIA_RETENTION_DAYS")
    #: Log prompts in full (default: their length only).
    log_prompts: bool = Field(False, validation_alias="PROMPTREEL_LOG_PROMPTS")
    #: One info line per answered HTTP request and per WebSocket session (default: only refusals and errors).
    log_requests: bool = Field(False, validation_alias="PROMPTREEL_LOG_REQUESTS")
    #: Wrong API tokens one client address may send per minute; more are refused with 429 (0: no limit).
    auth_failures_per_minute: int = Field(10, ge=0, validation_alias="PROMPTREEL_AUTH_FAILURES_PER_MINUTE")
    #: Jobs one /ws connection may subscribe to at once.
    max_ws_subscriptions: int = Field(1000, ge=1, validation_alias="PROMPTREEL_MAX_WS_SUBSCRIPTIONS")
    #: Seconds a client has to send a request (line, headers and body); then its connection is dropped.
    header_timeout_seconds: float = Field(10.0, gt=0, validation_alias="PROMPTREEL_HEADER_TIMEOUT_SECONDS")
    #: Largest image (bytes) taken from a provider, or read as a video step's input.
    max_image_bytes: int = Field(50 * 2**20, ge=2**20, validation_alias="PROMPTREEL_MAX_IMAGE_BYTES")
    #: Largest video (bytes) taken from a provider.
    max_video_bytes: int = Field(300 * 2**20, ge=2**20, validation_alias="PROMPTREEL_MAX_VIDEO_BYTES")
    #: Spending limits in USD per user and for the service (`*`), per day or month: "alice:20/day,*:500/month".
    budgets: str | None = Field(None, validation_alias="PROMPTREEL_BUDGETS")
    #: Users (names of API_TOKENS) who see everyone's spend in GET /api/v1/usage.
    admin_users: str | None = Field(None, validation_alias="PROMPTREEL_ADMIN_USERS")
    #: Fetch provider outputs from private addresses and over plain http too (self-hosted gateways).
    allow_private_output_urls: bool = Field(False, validation_alias="PROMPTREEL_ALLOW_PRIVATE_OUTPUT_URLS")
    #: Largest picture a user may upload (bytes; POST /api/v1/uploads).
    max_upload_bytes: int = Field(20 * 2**20, ge=2**20, validation_alias="PROMPTREEL_MAX_UPLOAD_BYTES")
    #: Largest picture a user may upload (pixels, width times height).
    max_upload_pixels: int = Field(40_000_000, ge=1_000_000, le=100_000_000, validation_alias="PROMPTREEL_MAX_UPLOAD_PIXELS")
    #: Uploads no unfinished job uses are removed this long after they were made (hours).
    upload_expiry_hours: float = Field(24.0, gt=0, validation_alias="PROMPTREEL_UPLOAD_EXPIRY_HOURS")
    # Webhooks (docs/api.md#webhooks).
    #: Signs webhook deliveries (`whsec_` + base64); default: one made once and kept in the data dir (a cluster must share one).
    webhook_secret: str | None = Field(None, validation_alias="PROMPTREEL_WEBHOOK_SECRET")
    #: Accept and deliver to webhook URLs on loopback, private and link-local addresses.
    webhook_allow_private: bool = Field(False, validation_alias="PROMPTREEL_WEBHOOK_ALLOW_PRIVATE")
    #: First retry delay of a failed delivery (s), doubling per attempt (at most an hour), with jitter.
    webhook_retry_base_seconds: float = Field(10.0, gt=0, validation_alias="PROMPTREEL_WEBHOOK_RETRY_BASE_SECONDS")
    #: A delivery without a 2xx for this long after its event is given up.
    webhook_retry_hours: float = Field(24.0, gt=0, validation_alias="PROMPTREEL_WEBHOOK_RETRY_HOURS")

    @model_validator(mode="after")
    def _check_scale_out(self) -> Settings:
        if self.stalled_after_seconds <= self.heartbeat_seconds:
            raise ValueError("PROMPTREEL_STALLED_AFTER_SECONDS must be longer than PROMPTREEL_HEARTBEAT_SECONDS")
        for entry in (self.api_tokens or "").split(","):
            if entry.strip() and not all(part.strip() for part in entry.partition(":")[::2]):
                raise ValueError("API_TOKENS must be name:token pairs separated by commas")
        if self.task_engine == "procrastinate" and not self.secret_key:
            raise ValueError("a cluster needs PROMPTREEL_SECRET_KEY, the same on every host (it signs media URLs)")
        if self.task_engine == "procrastinate" and not self.storage_secret:
            raise ValueError(
                "a cluster needs PROMPTREEL_STORAGE_SECRET, the same on every instance (it signs the studio's session cookies)"
            )
        if self.task_engine == "procrastinate" and not self.webhook_secret:
            # Deliveries are sent by whichever process is alive: one kept per data dir would sign differently per host.
            raise ValueError(
                "a cluster needs PROMPTREEL_WEBHOOK_SECRET, the same on every process (it signs webhook deliveries; python -c"
                " \"import base64, secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\" makes one)"
            )
        if "*" in self.cors_origins:
            raise ValueError(
                "PROMPTREEL_CORS_ORIGINS='*' would let every website call the API with its visitors' cookies:"
                " list the origins instead"
            )
        for pattern in self.allowed_hosts:
            if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*" and not pattern.startswith("*.")):
                raise ValueError(f"PROMPTREEL_ALLOWED_HOSTS: {pattern!r} is not a host name, '*.example.com' or '*'")
        if self.task_engine == "procrastinate" and not (self.database_url or "").startswith("postgresql"):
            raise ValueError("PROMPTREEL_TASK_ENGINE=procrastinate needs a PostgreSQL DATABASE_URL (postgresql+psycopg://...)")
        return self

    @model_validator(mode="after")
    def _check_token_length(self) -> Settings:
        # A short token is guessed: refuse it at start, naming where it is (never the token itself).
        named = [("API_TOKEN", "default", (self.api_token or "").strip())]  # spaces guess nothing
        for entry in (self.api_tokens or "").split(","):
            name, _, token = entry.strip().partition(":")
            named.append(("API_TOKENS", name.strip(), token.strip()))
        for variable, name, token in named:
            if token and len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"{variable}: the token of user '{name}' has {len(token)} characters, at least {MIN_TOKEN_LENGTH} are needed "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(24))' makes one)"
                )
        return self

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def users(self) -> dict[str, str]:
        """Token -> user name; empty when authentication is off."""
        users: dict[str, str] = {}
        if self.api_token and self.api_token.strip():
            users[self.api_token.strip()] = "default"  # as API_TOKENS' entries: spaces around are no part of it
        for entry in (self.api_tokens or "").split(","):
            name, _, token = entry.strip().partition(":")
            if name.strip() and token.strip():
                users[token.strip()] = name.strip()
        return users

    @property
    def answered_hosts(self) -> list[str]:
        """The Host names requests may carry (DNS rebinding brings others): loopback's, the address
        served on when it is one, PROMPTREEL_PUBLIC_URL's and PROMPTREEL_ALLOWED_HOSTS."""
        hosts = ["localhost", "127.0.0.1", "[::1]"]
        if self.host not in ("0.0.0.0", "::", ""):
            hosts.append(f"[{self.host}]" if ":" in self.host else self.host)
        public_host = urlsplit(self.public_url or "").hostname
        if public_host:
            hosts.append(f"[{public_host}]" if ":" in public_host else public_host)
        return [*dict.fromkeys(host.lower() for host in [*hosts, *self.allowed_hosts])]

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'promptreel.db').resolve()}"
