"""The built-in `local` provider's renderers: a prompt painted as a scene, a still animated into a clip."""

from backend.render.animate import OUTPUT_SIZES, animate_image, output_size_for
from backend.render.scene import render_scene

__all__ = ["OUTPUT_SIZES", "animate_image", "output_size_for", "render_scene"]
