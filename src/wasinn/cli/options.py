"""Options shared by ``wasinn run``, ``serve`` and ``rpc-server``, made from the config objects.

Each setting is declared once, on the object that holds it: a limit on
:class:`wasinn.host.Limits` (its field's flag, metavar and help), a server setting on
:class:`wasinn.serve.server.ServeConfig`. The flags, their defaults and their help come from
there, so a default is written in one place and every limit has a flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from wasinn.host.limits import Limits

F = TypeVar("F", bound=Callable[..., Any])

LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))
NO_LIMITS = Limits()


def limit_options(
    defaults: Limits = NO_LIMITS, *, scope: str = "", help: Mapping[str, str] | None = None
) -> Callable[[F], F]:
    """One option per :class:`Limits` field, named by its field. A limit with a default here
    (``serve``'s time limit) takes 0 for none. ``help`` replaces a field's text where a
    command says more (what an HTTP client gets)."""

    def decorate(command: F) -> F:
        for field in reversed(dataclasses.fields(Limits)):
            default = getattr(defaults, field.name)
            help_text = field.metadata["help"]
            if help and field.name in help:
                help_text = help[field.name]
            elif scope:
                help_text = f"{scope} {help_text[0].lower()}{help_text[1:]}"
            if default is not None and "0: none" not in help_text:
                help_text += " 0: none."
            command = click.option(
                field.metadata["flag"],
                field.name,
                type=click.IntRange(min=0),
                metavar=field.metadata["metavar"],
                default=default,
                show_default=default is not None,
                help=help_text,
            )(command)
        return command

    return decorate


def limits_from(options: Mapping[str, Any], defaults: Limits = NO_LIMITS) -> Limits:
    """The :class:`Limits` the options of :func:`limit_options` name (0 is none where the
    limit has a default)."""
    values: dict[str, int | None] = {}
    for name in LIMIT_FIELDS:
        value = options.get(name)
        if value == 0 and getattr(defaults, name) is not None:
            value = None
        values[name] = value
    return Limits(**values)


def pop_limits(options: dict[str, Any], defaults: Limits = NO_LIMITS) -> Limits:
    """:func:`limits_from`, removing the limit options from ``options``."""
    limits = limits_from(options, defaults)
    for name in LIMIT_FIELDS:
        options.pop(name, None)
    return limits


preload_option = click.option(
    "--nn-preload",
    "preload",
    multiple=True,
    metavar="NAME:ENCODING:TARGET:PATH[:PATH...]",
    help="Preload a model for load_by_name, e.g. default:openvino:cpu:model.xml:model.bin (repeatable).",
)


def world_options(command: F) -> F:
    """What the guest sees and loads: ``--dir``, ``--env``, ``--nn-preload``, ``--no-cache``
    (WasmEdge's spellings; the keyword arguments of :class:`wasinn.host.Runtime`)."""
    for option in reversed(
        [
            click.option(
                "--dir",
                "dirs",
                multiple=True,
                metavar="GUEST:HOST",
                help="Make a host directory visible to the guest (WasmEdge order; a bare PATH maps to "
                "itself; append :readonly to forbid writes).",
            ),
            click.option(
                "--env", "env", multiple=True, metavar="NAME=VALUE", help="Set an environment variable."
            ),
            preload_option,
            click.option(
                "--no-cache", is_flag=True, help="Compile the module even when a compiled copy is cached."
            ),
        ]
    ):
        command = option(command)
    return command


def config_option(config: type[Any], name: str, flag: str, **click_options: Any) -> Callable[[F], F]:
    """An option for the dataclass ``config``'s field ``name``: its default and help from there."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    help_text = field.metadata.get("help", "")
    return click.option(flag, name, default=field.default, show_default=True, help=help_text, **click_options)
