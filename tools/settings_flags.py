"""The settings' command-line flags, generated from the Settings model (never kept by hand).

Every field of :class:`~nsm_forwarder.config.Settings` becomes one flag named by
:func:`~nsm_forwarder.config.flag_name` (``src_ip`` -> ``--src-ip``); a Go bool becomes a pair
(``--insecure`` / ``--no-insecure``). Its help is the field's description, its environment
variable and its default, so ``--help`` is the settings reference. A flag's value is passed on
as given (a string) and validated by the model like an environment value, so a bad flag gets
the same one-line error naming the flag, and a field added to the model has its flag at once.
"""

from __future__ import annotations

import argparse
import typing
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from nsm_forwarder.config.describe import describe, env_var, flag_name
from nsm_forwarder.config.settings import Settings

__all__ = ["add_setting_flags", "setting_flags"]


def _metavar(name: str, field: FieldInfo) -> str:
    kind = field.annotation
    args = [_bare(a) for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if len(args) == 1:  # X | None
        kind = args[0]
    if kind is timedelta:
        return "DURATION"
    if kind is int:
        return "N"
    if kind is Path:
        return "PATH"
    if set(args) == {IPv4Address, IPv6Address}:
        return "IP"
    return name.upper()


def _bare(kind: Any) -> Any:
    """The type inside ``Annotated[type, ...]``."""
    return typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind


def _is_bool(field: FieldInfo) -> bool:
    return field.annotation is bool


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """add_setting_flags - one flag per setting, in an argument group of ``parser``."""
    group = parser.add_argument_group(
        "settings",
        "Each flag sets the setting of its name; each setting is also read from its environment "
        "variable and the config file (flags win over the environment, the environment over "
        "the file).",
    )
    defaults = {row[0]: row[2] for row in describe()}
    for name, field in Settings.model_fields.items():
        text = (field.description or "").replace("%", "%%")
        default = defaults[name] or '""'
        text += f" [env {env_var(name)}; default {default}]".replace("%", "%%")
        if _is_bool(field):
            group.add_argument(
                flag_name(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        else:
            group.add_argument(
                flag_name(name), dest=name, default=None, metavar=_metavar(name, field), help=text
            )


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """setting_flags - the settings given as flags, by field name (for ``load_settings``)."""
    return {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
