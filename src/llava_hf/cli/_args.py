"""What the command modules share: a help formatter that shows defaults, and options built from dataclass fields.

An option that fills a dataclass field is made from the field, so its default and help are written once, next to
the code that uses them:

    add_dataclass_arguments(parser, Limits, fields=["max_images"])   # --max-images, default and help from Limits
    limits = dataclass_from_args(Limits, parser.parse_args())        # Limits(max_images=<the option's value>)

and an option that fills a function argument takes that argument's default (`default_of`).
"""

import argparse
import dataclasses
import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; each option's help ends with its default (`%(default)s`), unless the
    default is empty (None, False, "", []) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "%(default)" in text
            or "default:" in text
            or default is None
            or default == ""
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def add_command(subparsers: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """`subparsers.add_parser(name, ...)` with llava-hf's help formatter."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    return subparsers.add_parser(name, **kwargs)


def comma_list(value: str) -> tuple[str, ...]:
    """`"a,b,c"` -> `("a", "b", "c")` (empty items dropped): how a `tuple[str, ...]` field is given."""
    return tuple(item for item in value.split(",") if item.strip())


def at_least(kind: type, minimum: float) -> Any:
    """An argparse `type` that parses `kind` and refuses values below `minimum` (and NaN) at the parser, with a
    message that names the bound (so a bad number never reaches the library)."""
    return bounded(kind, minimum=minimum)


def bounded(kind: type, minimum: float | None = None, above: float | None = None, maximum: float | None = None) -> Any:
    """An argparse `type` that parses `kind` (int or float) and refuses, at the parser, NaN and values below
    `minimum`, not above `above` (a strict bound: `above=0` for a positive number) or over `maximum`; the message
    names the bound."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not {'an integer' if kind is int else 'a number'}"
            ) from error
        if number != number:  # NaN passes every comparison below
            raise argparse.ArgumentTypeError(f"{value!r} is not a number")
        if minimum is not None and number < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        if above is not None and number <= above:
            raise argparse.ArgumentTypeError(f"{value} must be above {above}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum {maximum}")
        return number

    parse.__name__ = kind.__name__  # argparse names the type in its own errors
    return parse


def _option_type(annotation: Any) -> Any:
    """The type of a field annotation without `None` (`int | None` -> `int`)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot make an option of a field typed {annotation!r}")
        annotation = args[0]
    return annotation


def _field_default(field: dataclasses.Field, defaults: Any) -> Any:
    if isinstance(defaults, Mapping) and field.name in defaults:
        return defaults[field.name]
    if defaults is not None and not isinstance(defaults, Mapping):
        return getattr(defaults, field.name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    fields: Iterable[str] | None = None,
    *,
    prefix: str = "",
    rename: Mapping[str, str] | None = None,
    defaults: Any = None,
    help_text: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one option per field of the dataclass `cls` (all its init fields, or `fields` in that order).

    Each option is `--<prefix><field>` with `-` for `_` (or `rename[field]`, a whole flag such as `"--price-input"`),
    its destination `<prefix><field>` (what `dataclass_from_args` reads), its default the field's (or `defaults`: a
    mapping of field -> value, or an instance of `cls` to take every default from) and its help the field's
    `metadata["help"]` (or `help_text[field]`); `metadata["choices"]` becomes the option's choices,
    `metadata["min"]` its lowest value and `metadata["above"]` a strict lower bound, checked by the parser (which
    refuses NaN for every float field).

    Types: `int`, `float`, `str` (and those `| None`); `bool` is a switch: `--<field>` when it defaults to False,
    `--no-<field>` (storing False) when it defaults to True; `tuple[str, ...]` is given comma-separated. A field
    without a default is a required option. Returns the destinations added.
    """
    rename, help_text = rename or {}, help_text or {}
    by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(by_name) if fields is None else list(fields)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"{cls.__name__} has no init field(s) {unknown}.")
    hints = typing.get_type_hints(cls)
    dests = []
    for name in names:
        field = by_name[name]
        dest = prefix + name
        option_type = _option_type(hints[name])
        default = _field_default(field, defaults)
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text.get(name, field.metadata.get("help"))}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        flag = rename.get(name)
        if option_type is bool:
            if default is True:
                flag = flag or f"--no-{dest.replace('_', '-')}"
                kwargs |= {"action": "store_false", "default": True}
                if kwargs["help"]:
                    kwargs["help"] = f"turn off {kwargs['help']}"
            else:
                kwargs |= {"action": "store_true", "default": False}
        else:
            if typing.get_origin(option_type) is tuple:
                if typing.get_args(option_type)[0] is not str:
                    raise TypeError(f"{cls.__name__}.{name}: only tuple[str, ...] fields can be options")
                # A string default goes through `type` too, and `--help` shows it as it is typed.
                kwargs["type"] = comma_list
                default = ",".join(default) if default is not dataclasses.MISSING else default
            elif option_type in (int, float) and ("min" in field.metadata or "above" in field.metadata):
                kwargs["type"] = bounded(option_type, field.metadata.get("min"), field.metadata.get("above"))
            elif option_type is float:
                kwargs["type"] = bounded(float)  # NaN is refused at the parser
            elif option_type in (int, str):
                kwargs["type"] = option_type
            else:
                raise TypeError(f"{cls.__name__}.{name}: cannot make an option of a field typed {hints[name]!r}")
            if default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
        flag = flag or f"--{dest.replace('_', '-')}"
        if "action" not in kwargs:
            kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, **kwargs)
        dests.append(dest)
    return dests


def dataclass_from_args(
    cls: type,
    args: argparse.Namespace,
    fields: Iterable[str] | None = None,
    *,
    prefix: str = "",
    base: Any = None,
    **values: Any,
):
    """An instance of the dataclass `cls` from parsed options.

    Each init field (of `fields`, when given: pass the ones `add_dataclass_arguments` added when another option
    has a field's name) whose destination `<prefix><field>` is in `args` takes that value; `values` set fields
    directly; the other fields keep `base`'s values (an instance of `cls`) or the class defaults.
    """
    names = None if fields is None else set(fields)
    for field in dataclasses.fields(cls):
        if names is not None and field.name not in names:
            continue
        if field.init and field.name not in values and hasattr(args, prefix + field.name):
            values[field.name] = getattr(args, prefix + field.name)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def default_of(function: Any, parameter: str) -> Any:
    """The default of a function's parameter: for an option that fills a function argument rather than a field."""
    default = inspect.signature(function).parameters[parameter].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{function.__qualname__}({parameter}) has no default.")
    return default


def add_device_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "") -> None:
    """`--device` and `--dtype`, as `llava_hf.utils.load_pretrained` takes them (`what` prefixes the help)."""
    parser.add_argument("--device", default=None, help=f"{what}cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", help=f"{what}auto, float32, bfloat16, float16")
