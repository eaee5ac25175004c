"""Command line for the OpenAI-compatible server: load an assistant, serve it with uvicorn.

    python -m assistant.serve --adapter DIR --host 127.0.0.1 --port 8000
    python launch_server.py --api-key sk-local --allow-image-host images.example.com --plugins calculator

A thin shell: the flags come from ``ServerConfig``'s fields (list fields are repeatable flags, and
``--plugins`` also takes comma-separated names); everything else lives in ``assistant.serving``.
``--plugins`` names registry plugins, which ``assistant/`` does not import: ``launch_server.py``
(what ``./run.sh serve`` runs) passes the registry's resolver to ``main``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, Callable

from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from assistant.config import SERVING_MODES
from assistant.errors import AssistantError
from assistant.serving.config import ServerConfig

logger = logging.getLogger("assistant.serve")

API_KEYS_ENV = "MMA_API_KEYS"
REPEATABLE = {"api_keys": ("--api-key", "KEY"), "allow_image_hosts": ("--allow-image-host", "HOST"),
              "plugins": ("--plugins", "NAME[,NAME]")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", "--model", dest="adapter", help="adapter artifact folder (default: the built-in assistant)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--serving", choices=SERVING_MODES, default=None,
                        help="LLM weights to decode with (assistant.llm_serving; default: the artifact's llm.serving)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="logging level")
    add_dataclass_arguments(parser, ServerConfig, skip=tuple(REPEATABLE))
    fields = {field.name: field for field in dataclasses.fields(ServerConfig)}
    for name, (flag, metavar) in REPEATABLE.items():
        extra = f" (repeatable; also ${API_KEYS_ENV}, comma-separated)" if name == "api_keys" else " (repeatable)"
        parser.add_argument(flag, dest=name, action="append", default=argparse.SUPPRESS, metavar=metavar,
                            help=fields[name].metadata["help"] + extra)
    return parser


def server_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerConfig:
    """The ``ServerConfig`` the flags (and ``$MMA_API_KEYS``) describe."""
    environ = os.environ if environ is None else environ
    options = dataclass_kwargs(args, ServerConfig)
    options["plugins"] = [name.strip() for value in options.get("plugins", []) for name in value.split(",") if name.strip()]
    keys = list(options.get("api_keys", [])) + [key.strip() for key in environ.get(API_KEYS_ENV, "").split(",") if key.strip()]
    options["api_keys"] = keys
    return ServerConfig(**options)


def main(argv: list[str] | None = None, resolve_plugins: Callable[[list[str]], list[Any]] | None = None) -> int:
    """Serve until stopped; ``resolve_plugins`` turns ``--plugins`` names into tools (without it they are refused)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = server_config(args)
        import uvicorn

        from assistant.assistant import Assistant
        from assistant.serving.app import create_app

        if config.plugins and resolve_plugins is None:
            raise AssistantError("--plugins needs the plugin registry: run `python launch_server.py` (./run.sh serve)")
        plugin_tools = resolve_plugins(config.plugins) if config.plugins else None
        bot = Assistant.from_pretrained(args.adapter, serving=args.serving)
        app = create_app(bot, config, plugin_tools=plugin_tools)
    except AssistantError as error:
        logger.error("%s", error)
        return 2
    for key, value in bot.describe().items():
        logger.info("%s: %s", key, value)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        logger.warning("listening on %s without API keys: anyone who can reach this port can use the model", args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
