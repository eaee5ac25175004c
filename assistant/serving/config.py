"""``ServerConfig``: every option of the OpenAI-compatible server, in one typed dataclass.

``python -m assistant.serve`` builds its command line from these fields. The config only holds
names and limits; the app, the admission queue and the image fetcher read it. It knows nothing
about HTTP or the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.errors import AssistantError

DEFAULT_MODEL_NAME = "multimodal-assistant"


@dataclass
class ServerConfig:
    """What the server accepts, how much at once, and which extras are switched on."""

    served_model_name: str = field(
        default=DEFAULT_MODEL_NAME, metadata={"help": "the model id clients send and /v1/models lists"}
    )
    api_keys: list[str] = field(
        default_factory=list,
        metadata={"help": "accepted Bearer keys for /v1/*; none: no authentication (/health is always open)"},
    )
    max_concurrent: int = field(default=16, metadata={"help": "generations running at once"})
    max_queue: int = field(default=64, metadata={"help": "requests waiting for a slot; more get 429"})
    retry_after_s: int = field(default=1, metadata={"help": "Retry-After seconds sent with a 429"})
    max_body_mb: float = field(default=20.0, metadata={"help": "largest request body; larger gets 413"})
    default_max_tokens: int = field(
        default=256, metadata={"help": "completion tokens when a request sets neither max_tokens nor max_completion_tokens"}
    )
    default_temperature: float = field(
        default=0.0, metadata={"help": "temperature when a request sets none (OpenAI's is 1.0; 0 is greedy)"}
    )
    allow_image_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "hosts remote image URLs may come from (exact names); none: remote image URLs are refused"},
    )
    image_fetch_timeout_s: float = field(default=10.0, metadata={"help": "time limit for fetching one remote image"})
    image_fetch_max_mb: float = field(default=10.0, metadata={"help": "largest remote image fetched"})
    plugins: list[str] = field(
        default_factory=list,
        metadata={"help": "registry plugins run server-side when a request brings no tools ('all' for every one)"},
    )
    plugin_max_steps: int = field(default=4, metadata={"help": "rounds of server-side plugin calls per request"})

    def __post_init__(self) -> None:
        if not self.served_model_name or not isinstance(self.served_model_name, str):
            raise AssistantError("served_model_name must be a non-empty string")
        for name in ("max_concurrent", "retry_after_s", "default_max_tokens", "plugin_max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AssistantError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise AssistantError(f"max_queue must be a non-negative integer, got {self.max_queue!r}")
        for name in ("max_body_mb", "image_fetch_timeout_s", "image_fetch_max_mb"):
            if not getattr(self, name) > 0:
                raise AssistantError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.default_temperature <= 2.0:
            raise AssistantError(f"default_temperature must be in [0, 2], got {self.default_temperature!r}")
        if any(not key for key in self.api_keys):
            raise AssistantError("an API key must not be empty")
        self.allow_image_hosts = [host.strip().lower().rstrip(".") for host in self.allow_image_hosts if host.strip()]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def image_fetch_max_bytes(self) -> int:
        return int(self.image_fetch_max_mb * 1024 * 1024)

    @property
    def remote_images(self) -> bool:
        """Whether remote image URLs are fetched at all (only from ``allow_image_hosts``)."""
        return bool(self.allow_image_hosts)
