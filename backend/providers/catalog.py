"""The model catalog: every model promptreel can run, as data (models.toml beside this file).

Each entry says what the model is (provider, kind, name), what it accepts (sizes, qualities,
ratios, durations), what it costs (a price rule with its source and the date it was read) and
when it retires. A user's own file (PROMPTREEL_MODELS_FILE) adds entries or replaces built-in
ones by id, without a release. A bad file is refused with one line that names the file, the
entry and the field.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILT_IN = Path(__file__).with_name("models.toml")

Provider = Literal["openai", "replicate", "runway", "local", "comfyui"]
Kind = Literal["image", "video"]
#: The names the integration guide's clients send, forever: a provider and its default image model.
ALIASES: dict[str, str] = {"dalle3": "openai", "flux1": "replicate"}


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message is one line naming the file, entry and field."""


class TokenPrices(BaseModel):
    """USD per million tokens, as the provider's `usage` counts them."""

    model_config = ConfigDict(extra="forbid")

    textInput: float = Field(ge=0)
    imageInput: float = Field(ge=0)
    imageOutput: float = Field(ge=0)


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Literal["image", "second", "token"]
    #: USD per image: provider quality (or "*") -> job size (or "*") -> price. For token-priced
    #: models, the estimate made before the job.
    perImage: dict[str, dict[str, float]] | None = None
    usdPerSecond: float | None = Field(None, ge=0)
    tokens: TokenPrices | None = None
    source: str | None = Field(None, pattern=r"^https://\S+$")
    read: date | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Price:
        if self.unit == "second" and self.usdPerSecond is None:
            raise ValueError("usdPerSecond: a price per second needs one")
        if self.unit in ("image", "token") and not self.perImage:
            raise ValueError(f"perImage: a price per {self.unit} needs one (for tokens: the estimate before the job)")
        if self.unit == "token" and self.tokens is None:
            raise ValueError("tokens: a price per token needs them")
        for table in (self.perImage or {}).values():
            if any(value < 0 for value in table.values()):
                raise ValueError("perImage: prices cannot be negative")
        free = self.usdPerSecond == 0 or all(v == 0 for t in (self.perImage or {}).values() for v in t.values())
        if not free and (self.source is None or self.read is None):
            raise ValueError("source: a price needs its source (the provider's price page) and the date it was read")
        return self


class ReplicateInput(BaseModel):
    """How a job's fields map onto a Replicate model's input: the input's field names."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = "prompt"
    #: The aspect ratio field (given the entry's `sizes` value), or width/height fields.
    aspectRatio: str | None = None
    width: str | None = None
    height: str | None = None
    seed: str | None = None
    #: The input image (a data URI), for image-to-video models.
    image: str | None = None
    duration: str | None = None
    #: Inputs sent as they are, e.g. {output_format = "png"}.
    fixed: dict[str, Any] = Field(default_factory=dict)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    provider: Provider
    kind: Kind
    name: str = Field(min_length=1, max_length=100)
    default: bool = False
    #: Video models: whether they animate an input image (all the pipeline runs do).
    imageInput: bool = False
    #: Image models: the job's size -> what the provider is asked for (a size, or an aspect ratio).
    sizes: dict[str, str] = Field(default_factory=dict)
    #: The job's quality -> the provider's own name for it.
    qualities: dict[str, str] = Field(default_factory=dict)
    ratios: list[str] = Field(default_factory=list)
    durations: list[int] = Field(default_factory=list)
    price: Price | None = None
    retiresOn: date | None = None
    replacement: str | None = None
    input: ReplicateInput | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if self.kind == "video" and not self.durations:
            raise ValueError("durations: a video model needs them")
        if self.kind == "video" and any(d < 1 or d > 60 for d in self.durations):
            raise ValueError("durations: whole seconds from 1 to 60")
        if self.kind == "image" and not self.sizes:
            raise ValueError("sizes: an image model needs them (the job's size -> the provider's)")
        if self.provider == "replicate":
            owner, _, name = self.id.partition("/")
            if not owner or not name or "/" in name:
                raise ValueError("id: a Replicate model id is owner/name")
            if self.input is None:
                raise ValueError("input: a Replicate model needs it (how the job's fields map onto the model's input)")
            if self.kind == "video" and self.input.image is None:
                raise ValueError("input.image: a Replicate video model needs it")
        return self

    @property
    def family(self) -> str:
        """'openai image', for messages."""
        return f"{self.provider} {self.kind}"

    def retired(self, today: date | None = None) -> bool:
        return self.retiresOn is not None and self.retiresOn <= (today or datetime.now(UTC).date())

    def provider_quality(self, quality: str) -> str:
        """The provider's name for a job's quality (the job's own name when the model maps none)."""
        return self.qualities.get(quality, quality)

    def price_summary(self) -> str:
        """The price rule in a few words: '$0.12/s', '$0.003/image', 'tokens (est. $0.02-0.19/image)'."""
        price = self.price
        if price is None:
            return "no price"
        if price.unit == "second":
            return f"${price.usdPerSecond:g}/s"
        figures = sorted({value for row in (price.perImage or {}).values() for value in row.values()})
        span = f"${figures[0]:g}" if len(figures) == 1 else f"${figures[0]:g}-{figures[-1]:g}"
        return f"tokens (est. {span}/image)" if price.unit == "token" else f"{span}/image"

    def accepts_summary(self) -> str:
        """What it takes in a few words: 'durations 4,6,8 s', 'sizes ...; quality ...'."""
        if self.kind == "video":
            return "durations " + ",".join(str(seconds) for seconds in self.durations) + " s"
        qualities = f"; quality {', '.join(self.qualities)}" if self.qualities else ""
        return "sizes " + ", ".join(self.sizes) + qualities

    def public(self) -> dict[str, Any]:
        """The entry as the API shows it (camelCase, as in the file; `price` null when it has none)."""
        return {"price": None, **self.model_dump(mode="json", exclude_none=True, exclude={"default"})}


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry]


def _problem(path: Path, raw: dict[str, Any], error: ValidationError) -> CatalogError:
    first = error.errors()[0]
    location = list(first.get("loc", ()))
    entry = "the file"
    if len(location) >= 2 and location[0] == "models" and isinstance(location[1], int):
        index = location[1]
        models = raw.get("models")
        items: list[Any] = models if isinstance(models, list) else []
        item = items[index] if index < len(items) else None
        model_id = item.get("id") if isinstance(item, dict) else None
        entry = f"model {index + 1}" + (f" ({model_id})" if model_id else "")
        location = location[2:]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    named, _, rest = message.partition(": ")
    if rest and named.replace(".", "").isalnum():  # a check across fields names the field it is about
        location, message = [*location, named], rest
    field = ".".join(str(part) for part in location) or "entry"
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif first.get("type") == "missing":
        message = "this field is required"
    return CatalogError(f"{path}: {entry}: {field}: {message}")


def read_file(path: Path) -> list[ModelEntry]:
    """The entries of one catalog file; CatalogError (one line) if it cannot be used."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogError(f"{path}: cannot be read: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CatalogError(f"{path}: not valid TOML: {error}") from None
    try:
        entries = CatalogFile.model_validate(raw).models
    except ValidationError as error:
        raise _problem(path, raw, error) from None
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.id in seen:
            raise CatalogError(f"{path}: model {index + 1} ({entry.id}): id: the same id appears twice in this file")
        seen.add(entry.id)
    return entries


class Catalog:
    """The built-in entries, with a user's file laid over them (same id: replaced whole)."""

    def __init__(self, entries: list[ModelEntry], *, user_file: Path | None = None):
        self.user_file = user_file
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            self._entries[entry.id] = entry
        for entry in self._entries.values():
            if entry.replacement is not None and entry.replacement not in self._entries:
                where = user_file or BUILT_IN
                raise CatalogError(f"{where}: model {entry.id}: replacement: no model {entry.replacement!r} in the catalog")

    @classmethod
    def load(cls, user_file: Path | None = None) -> Catalog:
        entries = read_file(BUILT_IN)
        if user_file is not None:
            entries += read_file(user_file)
        return cls(entries, user_file=user_file)

    def get(self, model_id: str) -> ModelEntry | None:
        return self._entries.get(model_id)

    def all(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def of(self, provider: str, kind: Kind) -> list[ModelEntry]:
        provider = canonical(provider)
        return [entry for entry in self._entries.values() if entry.provider == provider and entry.kind == kind]

    def default(self, provider: str, kind: Kind) -> ModelEntry | None:
        """The entry marked default for the provider and kind (the last file's wins)."""
        found = [entry for entry in self.of(provider, kind) if entry.default]
        return found[-1] if found else None


def canonical(provider: str) -> str:
    """'openai' for 'dalle3', 'replicate' for 'flux1'; other names as they are."""
    return ALIASES.get(provider, provider)


_active: Catalog | None = None


def activate(catalog: Catalog) -> None:
    """Make `catalog` the one prices and checks read (done when the provider registry is built)."""
    global _active
    _active = catalog


def active() -> Catalog:
    """The catalog in use: the activated one, else the built-in one alone."""
    global _active
    if _active is None:
        _active = Catalog.load()
    return _active
