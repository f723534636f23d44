"""A dataclass is the command line: one ``--flag`` per field, the way every CLI and bench here is built.

Each script describes its knobs once, as a config dataclass whose ``__post_init__`` checks them, and
:func:`parse_dataclass` turns the fields into flags: ``--field-name VALUE``; booleans as
``--flag/--no-flag`` (``BooleanOptionalAction``); ``X | None`` accepts ``none``; ``tuple[int, ...]`` takes
any number of values and ``tuple[int, int]`` exactly two. A field's ``metadata`` may add ``help`` and
``choices`` (``field(default="fp32", metadata={"choices": ("fp32", "bf16")})``). Defaults come from the
dataclass itself (or an instance such as a preset), so no default is ever written twice.

Reference: the standard library's ``argparse`` and ``dataclasses``; it replaces nanoGPT's ``exec``
configurator.
"""

import argparse
import types
import typing
from dataclasses import fields


def _optional(inner):
    def parse(text, inner=inner):
        return None if text.lower() == "none" else inner(text)

    parse.__name__ = inner.__name__
    return parse


def _flag_kwargs(tp) -> dict:
    """argparse keyword arguments (type, nargs, action) for a field annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"type": _optional(inner)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": args[0], "nargs": "*"}
        return {"type": args[0], "nargs": len(args)}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": tp}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, defaults=None) -> None:
    """One ``--field-name`` per init field of dataclass ``cls``; defaults from ``defaults`` (an instance)."""
    defaults = cls() if defaults is None else defaults
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        default = getattr(defaults, f.name)
        kwargs = _flag_kwargs(hints[f.name])
        if "choices" in f.metadata:
            kwargs["choices"] = tuple(f.metadata["choices"])
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else repr(default)
        text = f.metadata.get("help", "")
        kwargs["help"] = f"{text} (default: {shown})" if text else f"default: {shown}"
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=default, **kwargs)


def config_from_namespace(cls, namespace: argparse.Namespace | dict):
    """Build ``cls`` from parsed flags (lists from ``nargs`` become tuples, as the fields declare)."""
    values = dict(vars(namespace) if isinstance(namespace, argparse.Namespace) else namespace)
    names = {f.name for f in fields(cls) if f.init}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def parse_dataclass(cls, argv: list[str] | None = None, defaults=None, **parser_kwargs):
    """Parse ``argv`` into an instance of ``cls``; ``parser_kwargs`` go to ``ArgumentParser`` (prog, ...)."""
    parser = argparse.ArgumentParser(**parser_kwargs)
    add_dataclass_flags(parser, cls, defaults)
    return config_from_namespace(cls, parser.parse_args(argv))
