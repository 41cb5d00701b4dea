"""Image and video providers: the provider protocol (base.py), the registry that builds them from the
settings (registry.py), the built-in `local` ones (local.py) and the remote APIs, with their shared
HTTP, retry and output-URL rules, and their prices (pricing.py).

May import backend.settings, backend.media.checks and backend.render."""
