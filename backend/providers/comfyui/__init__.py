"""The `comfyui` provider: the user's own ComfyUI, with workflows as files (workflows/)."""

from backend.providers.comfyui.provider import IMAGE_MODEL, VIDEO_MODEL, ComfyUIProvider

__all__ = ["IMAGE_MODEL", "VIDEO_MODEL", "ComfyUIProvider"]
