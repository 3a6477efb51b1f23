"""`train --config FILE` (JSON or TOML) and `train --print-config`: the options of a run in a file.

    dad-edge train --data my_part --out runs/a --minutes 30 --print-config > a.toml
    dad-edge train --config a.toml --seed 1          # flags given on the command line win over the file

Keys are the command's long options without the dashes (`lr-unet`, or `lr_unet`; hidden aliases
such as `batch-size` too), values as TOML / JSON types. A file value is checked as the same flag
would be (type, choices), so a typo or a wrong type fails naming the file and the key.

How "given on the command line" is told apart from "left at its default": add_config_arguments
replaces each option's default by an `Unset` wrapper; after parsing, an option still holding one
was not given, and takes the file's value, or else its real default.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, Dict

from dad_edge.errors import ConfigError

_SKIP = {"help", "config", "print_config"}


class Unset:
    """An option's default, marking that the command line did not set it (str() is the default's)."""

    def __init__(self, value: Any):
        self.unset_default = value

    def __str__(self) -> str:
        return str(self.unset_default)

    def __repr__(self) -> str:
        return repr(self.unset_default)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Add --config and --print-config to `p`; call it after every other option is added."""
    required = []
    for action in p._actions:
        if action.dest in _SKIP or not action.option_strings or action.default is argparse.SUPPRESS:
            continue
        action.default = Unset(action.default)
        if action.required:  # may come from the file instead: checked in resolve_config
            action.required = False
            required.append(action.dest)
    g = p.add_argument_group("configuration file")
    g.add_argument("--config", metavar="FILE", help="read options from a JSON or TOML file; flags given here win")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved options as TOML (to save with > FILE) and exit without training")
    p.set_defaults(config_parser=p, config_required=tuple(required))


def _read(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # the `train` extra installs tomli on Python 3.9-3.10
                import tomli as tomllib
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raise ConfigError(f"--config {path}: use a .json or .toml file")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--config {path}: not valid {suffix[1:].upper()} ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: the file must hold a table / object of options")
    return values


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A file value checked and converted as the flag's own text would be."""
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true or false")
        return value
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} must be a single number or string")
    try:
        converted = action.type(str(value)) if action.type else str(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {value!r} is not accepted ({exc})") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where}: {value!r} must be one of {', '.join(map(str, action.choices))}")
    return converted


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: the same escapes as JSON


def resolve_config(args: argparse.Namespace) -> bool:
    """Fill the options the command line left unset from --config FILE, else their defaults; with
    --print-config print them as TOML and return True (nothing else to do), else False."""
    parser = args.config_parser
    by_key: Dict[str, argparse.Action] = {}
    primary: Dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in _SKIP or not action.option_strings:
            continue
        if isinstance(action.default, Unset):
            primary.setdefault(action.dest, action)
        for option in action.option_strings:
            if option.startswith("--"):
                by_key[option[2:]] = by_key[option[2:].replace("-", "_")] = action
    if args.config:
        for key, value in _read(Path(args.config)).items():
            action = by_key.get(key)
            if action is None or action.dest not in primary:
                near = difflib.get_close_matches(key, list(by_key), n=1)
                raise ConfigError(f"--config {args.config}: unknown option {key!r}"
                                  + (f"; did you mean {near[0]!r}?" if near else ""))
            if isinstance(getattr(args, action.dest), Unset):
                setattr(args, action.dest, _convert(primary[action.dest], value, f"--config {args.config}: {key}"))
    for dest in primary:
        value = getattr(args, dest)
        if isinstance(value, Unset):
            setattr(args, dest, value.unset_default)
    if args.print_config:
        lines = [f"# dad-edge {parser.prog.split()[-1]} options (read back with --config FILE; "
                 "commented lines keep their defaults)"]
        for dest, action in primary.items():
            key, value = action.option_strings[-1][2:], getattr(args, dest)
            lines.append(f"# {key} =" if value is None else f"{key} = {_toml_value(value)}")
        print("\n".join(lines))
        return True
    missing = ["--" + dest.replace("_", "-") for dest in args.config_required if getattr(args, dest) is None]
    if missing:  # argparse's own message and exit code 2, as when the options were required
        parser.error(f"the following arguments are required: {', '.join(missing)} (as flags or in --config FILE)")
    return False
