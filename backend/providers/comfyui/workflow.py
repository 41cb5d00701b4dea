"""A ComfyUI workflow as files: the workflow in ComfyUI's API format (`name.json`, what its "Export
(API)" saves) and a small mapping beside it (`name.toml`) naming, as "node id.input name", the
inputs promptreel fills (prompt, negative, seed, width, height, frames, fps, image), the node whose
files are the result, and the model files the workflow needs with the folder ComfyUI keeps them in.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUILT_IN = Path(__file__).with_name("workflows")
IMAGE_WORKFLOW = BUILT_IN / "sdxl_turbo_t2i.json"
VIDEO_WORKFLOW = BUILT_IN / "ltxv_i2v.json"

#: The folder of ComfyUI's models/ a loader's input names its file in, for workflows whose mapping
#: lists no [models] (ComfyUI's own loaders: nodes.py and comfy_extras).
LOADER_FOLDERS = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "vae_name": "vae",
    "lora_name": "loras",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "control_net_name": "controlnet",
    "upscale_model_name": "upscale_models",
    "clip_vision_name": "clip_vision",
}
#: How a message names a folder's kind of file: "ComfyUI has no checkpoint `x` in `checkpoints`".
FOLDER_NOUNS = {
    "checkpoints": "checkpoint",
    "diffusion_models": "diffusion model",
    "vae": "VAE",
    "loras": "LoRA",
    "text_encoders": "text encoder",
    "controlnet": "ControlNet",
    "upscale_models": "upscale model",
    "clip_vision": "CLIP vision model",
}
FILLED = ("prompt", "negative", "seed", "width", "height", "frames", "fps", "image")


class WorkflowError(ValueError):
    """A workflow or mapping file that cannot be used; one line naming the file and the field."""


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    #: The node whose files (`images`, `gifs` or `videos` in /history's outputs) are the result.
    output: str
    inputs: dict[str, str | list[str]]
    #: "node id.input name" -> ComfyUI's models folder; without it, read from the loaders' inputs.
    models: dict[str, str] | None = None
    framesMultipleOf: int = Field(1, ge=1)
    framesPlus: int = Field(0, ge=0)


@dataclass(frozen=True)
class ModelFile:
    node: str
    class_type: str
    folder: str
    filename: str

    def missing(self) -> str:
        noun = FOLDER_NOUNS.get(self.folder, "model")
        return f"ComfyUI has no {noun} `{self.filename}` in `{self.folder}`"


@dataclass(frozen=True)
class Workflow:
    path: Path
    name: str
    graph: dict[str, Any]
    output: str
    inputs: dict[str, tuple[tuple[str, str], ...]]
    model_files: tuple[ModelFile, ...]
    frames_multiple_of: int = 1
    frames_plus: int = 0

    @classmethod
    def load(cls, path: Path) -> Workflow:
        """`path` (the API-format JSON) and the mapping of the same name with `.toml`."""
        mapping_path = path.with_suffix(".toml")
        try:
            graph = json.loads(path.read_text(encoding="utf-8"))
            raw = tomllib.loads(mapping_path.read_text(encoding="utf-8"))
        except OSError as error:
            raise WorkflowError(f"{error.filename}: cannot be read: {error.strerror}") from None
        except (ValueError, tomllib.TOMLDecodeError) as error:
            raise WorkflowError(f"{path} or {mapping_path.name}: not valid JSON/TOML: {error}") from None
        if not isinstance(graph, dict) or not all(isinstance(node, dict) and "class_type" in node for node in graph.values()):
            raise WorkflowError(f"{path}: not a workflow in ComfyUI's API format (Export (API)): nodes need a class_type")
        try:
            mapping = Mapping.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise WorkflowError(f"{mapping_path}: {field}: {first['msg']}") from None

        def target(field: str, ref: str) -> tuple[str, str]:
            node, _, name = ref.partition(".")
            if node not in graph or not name:
                raise WorkflowError(f"{mapping_path}: {field}: {ref!r} names no input of a node in {path.name}")
            return node, name

        inputs: dict[str, tuple[tuple[str, str], ...]] = {}
        for key, refs in mapping.inputs.items():
            if key not in FILLED:
                raise WorkflowError(f"{mapping_path}: inputs.{key}: unknown (promptreel fills {', '.join(FILLED)})")
            inputs[key] = tuple(target(f"inputs.{key}", ref) for ref in ([refs] if isinstance(refs, str) else refs))
        if mapping.output not in graph:
            raise WorkflowError(f"{mapping_path}: output: no node {mapping.output!r} in {path.name}")
        model_refs: list[tuple[str, str, str]]
        if mapping.models is not None:
            model_refs = [(*target(f"models.{ref}", ref), folder) for ref, folder in mapping.models.items()]
        else:
            model_refs = [
                (node_id, name, LOADER_FOLDERS[name])
                for node_id, node in graph.items()
                for name in node.get("inputs", {})
                if name in LOADER_FOLDERS
            ]
        files = []
        for node_id, name, folder in model_refs:
            filename = graph[node_id].get("inputs", {}).get(name)
            if isinstance(filename, str):  # a link (["4", 0]) names no file
                files.append(ModelFile(node_id, graph[node_id]["class_type"], folder, filename))
        return cls(path, mapping.name, graph, mapping.output, inputs, tuple(files), mapping.framesMultipleOf, mapping.framesPlus)

    @property
    def node_classes(self) -> list[str]:
        return sorted({node["class_type"] for node in self.graph.values()})

    def frames_for(self, seconds: int, fps: int) -> int:
        """The frame count the model makes closest above `seconds` x `fps` (8n+1 for LTX-Video)."""
        wanted = max(1, seconds * fps - self.frames_plus)
        return math.ceil(wanted / self.frames_multiple_of) * self.frames_multiple_of + self.frames_plus

    def filled(self, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of the graph with the mapped inputs set; values the mapping does not name are left out."""
        graph = copy.deepcopy(self.graph)
        for key, value in values.items():
            for node, name in self.inputs.get(key, ()):
                graph[node].setdefault("inputs", {})[name] = value
        return graph

    def node_type(self, node_id: str) -> str:
        node = self.graph.get(str(node_id))
        return str(node["class_type"]) if node else "?"
