"""GET /api/v1/models: the model catalog, with what each model accepts and costs, and whether it
can run now (and why not)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from backend.api.routes import Credentials, SystemDep, authenticate, errors

router = APIRouter()


@router.get("/api/v1/models", tags=["models"], responses=errors(401, 422))
async def list_models(
    request: Request,
    system: SystemDep,
    credentials: Credentials,
    kind: Annotated[Literal["image", "video"] | None, Query(description="image or video models only")] = None,
    provider: Annotated[
        Literal["openai", "replicate", "runway", "local", "dalle3", "flux1", "comfyui"] | None,
        Query(description="one provider's models (dalle3 and flux1 name openai and replicate)"),
    ] = None,
    available: Annotated[bool | None, Query(description="only the models that can (true) or cannot (false) run now")] = None,
) -> list[dict[str, Any]]:
    """Every model of the catalog (built in, and PROMPTREEL_MODELS_FILE's), with its capabilities,
    its price rule and source, whether it is its provider's default, and whether it can run now:
    `reason` says why not (a setting to set, a key refused, retired, or the provider's answer
    that the model does not exist). Availability comes from the configuration and a cached check
    at the provider, awaited at most a moment."""
    authenticate(request, system, credentials)
    registry = system.providers
    entries = [entry for entry, _, _ in registry.models(kind=kind, provider=provider)]
    await registry.check_models(entries)
    rows = registry.models(kind=kind, provider=provider)
    return [registry.model_data(*row) for row in rows if available is None or row[1] == available]
