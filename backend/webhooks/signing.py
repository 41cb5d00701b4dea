"""The Standard Webhooks signature of a delivery, and its secret: PROMPTREEL_WEBHOOK_SECRET, or one
made once and kept in the data dir like the media signing key (backend/auth.py: kept_secret)."""

from __future__ import annotations

import base64
from datetime import datetime

from standardwebhooks import Webhook

from backend.auth import kept_secret
from backend.settings import Settings

WEBHOOK_SECRET_FILE = "webhook_secret"
PREFIX = "whsec_"


def load_webhook_secret(settings: Settings) -> str:
    """`whsec_` + base64 of the key: the configured one, or 32 random bytes kept in the data dir."""
    if settings.webhook_secret:
        secret = settings.webhook_secret.strip()
        try:
            Webhook(secret)
        except Exception as error:  # binascii.Error, EmptyWebhookSecretError: the package's own words
            raise ValueError("PROMPTREEL_WEBHOOK_SECRET must be whsec_ followed by base64") from error
        return secret
    kept = kept_secret(None, settings.data_dir / WEBHOOK_SECRET_FILE)  # token_urlsafe(32): 32 random bytes
    return PREFIX + base64.b64encode(base64.urlsafe_b64decode(kept + "=" * (-len(kept) % 4))).decode()


def signed_headers(secret: str, message_id: str, moment: datetime, body: str) -> dict[str, str]:
    """The headers of one attempt: the same `webhook-id` every time, this attempt's timestamp."""
    return {
        "content-type": "application/json",
        "user-agent": "promptreel-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body),
    }
