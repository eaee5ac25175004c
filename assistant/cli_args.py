"""Generate argparse flags from dataclass fields (type hints + ``metadata["help"]``), and back.

Booleans become ``--flag/--no-flag``; ``list[str]`` takes several values; ``X | None`` accepts the word
``none``. Command lines built this way cannot drift from the configs they set.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for hints such as ``int | None``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def converter(kind: Any, optional: bool):
    """An argparse ``type=`` for ``kind``, accepting ``none`` when the field is optional."""
    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        return kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = (), recurse: bool = False
) -> None:
    """Add one ``--prefix-field-name`` flag per field of ``cls`` (defaults left to the dataclass).

    With ``recurse``, nested dataclass fields get dotted flags too (``--optim.learning-rate``, dest
    ``optim.learning_rate``); otherwise they are skipped. Dict-valued fields never get flags.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            if recurse:
                add_dataclass_arguments(parser, hints[field.name], f"{prefix}{field.name}.", recurse=True)
            continue
        kind, optional = _base_type(hints[field.name])
        flag = "--" + (prefix + field.name).replace("_", "-")
        options: dict[str, Any] = {"dest": prefix + field.name, "default": argparse.SUPPRESS, "help": field.metadata.get("help", "")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            options.update(nargs="*", type=typing.get_args(kind)[0])
        elif kind in (int, float, str):
            options["type"] = converter(kind, optional)
        else:
            continue
        parser.add_argument(flag, **options)


def dataclass_kwargs(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    given = vars(args)
    return {f.name: given[prefix + f.name] for f in dataclasses.fields(cls) if prefix + f.name in given}
