"""The OpenAI-compatible HTTP server over ``Assistant`` (``python -m assistant.serve``).

``config`` (the options) -> ``app`` (routes, keys, body limit) -> ``completions`` (one request:
checks, ``admission``, a ``worker`` thread per generation, ``disconnect`` watching, replies in the
``protocol`` shapes) with ``remote_media`` fetching allow-listed image URLs and ``errors`` giving every
failure OpenAI's error shape. Nothing here knows how the model generates.
"""

from assistant.serving.app import create_app
from assistant.serving.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
