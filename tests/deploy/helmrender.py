"""A minimal stand-in for ``helm template``: renders a chart whose templates keep to a documented
subset of Helm's template language, for tests on machines without a helm binary.

Helm templates are Go ``text/template`` plus Sprig and Helm functions. This renderer implements
only what docker/helm/nsm-forwarder uses, with Go's semantics for each:

* text and actions ``{{ ... }}``, with ``{{-`` / ``-}}`` trimming all whitespace (newlines
  included) before / after the action, and comments ``{{/* ... */}}``;
* ``if`` / ``else if`` / ``else`` / ``end`` and ``with`` / ``else`` / ``end`` (``with`` rebinds
  ``.``), with Go's truth (false, 0, nil, empty string, list or map are false);
* ``define "name"`` and ``include "name" DATA``; files whose name starts with ``_`` only define,
  and NOTES.txt is not a manifest (as Helm);
* pipelines ``a | f b`` (the left side becomes the last argument), parenthesised pipelines,
  fields ``.A.b`` on ``.`` and ``$``, string and number literals, ``true``, ``false``, ``nil``;
* functions: ``quote default toYaml indent nindent eq ne not and or index sha256sum fail``;
* the objects ``.Values`` (values.yaml, then each override merged over it as Helm does: maps
  merge key by key, anything else replaces, null deletes), ``.Release.{Name,Namespace,Service}``
  and ``.Chart.{Name,Version,AppVersion}``.

Anything else (variables, ``range``, ``tpl``, ``lookup``, other functions) raises
:class:`TemplateError`, so a chart that outgrows the subset fails loudly rather than renders
wrongly. A value prints as Go's ``{{ }}`` prints it; a missing map key prints as nothing (Helm
replaces ``<no value>`` with ``""``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Chart", "TemplateError", "render_chart", "render_string"]


class TemplateError(Exception):
    """A template outside the subset, or one that fails as Helm would (``fail``, nil field)."""


# --- parsing --------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: list[Any]


@dataclass
class _Block:
    kind: str  # "if" or "with"
    branches: list[tuple[list[Any] | None, list[Any]]] = field(default_factory=list)


def _split(source: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", body)] with the trim markers applied to the texts."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(("text", text))
        out.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    text = source[pos:]
    out.append(("text", text.lstrip(" \t\r\n") if trim_next else text))
    return out


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)'
    r"|(?P<field>\$?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|\$)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[()|]))"
)


def _tokens(body: str) -> list[tuple[str, str, bool]]:
    """(kind, text, whether whitespace came before it) of each token of an action."""
    out: list[tuple[str, str, bool]] = []
    pos = 0
    body = body.rstrip()
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"cannot parse {body[pos:]!r} in {{{{ {body} }}}}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind), m.group(0)[:1].isspace()))
        pos = m.end()
    return out


def _parse_pipe(tokens: list[tuple[str, str, bool]], i: int = 0) -> tuple[list[Any], int]:
    """A pipeline: a list of commands, each a list of operands; returns (pipe, next index)."""
    pipe: list[list[Any]] = [[]]
    while i < len(tokens):
        kind, text, _ = tokens[i]
        if kind == "punct" and text == ")":
            return pipe, i + 1
        if kind == "punct" and text == "|":
            pipe.append([])
        elif kind == "punct" and text == "(":
            sub, i = _parse_pipe(tokens, i + 1)
            if i < len(tokens) and tokens[i][0] == "field" and not tokens[i][2]:
                pipe[-1].append(("chain", (sub, tokens[i][1])))  # (pipeline).Field
                i += 1
            else:
                pipe[-1].append(("pipe", sub))
            continue
        elif kind == "str":
            pipe[-1].append(("lit", json.loads(text)))
        elif kind == "raw":
            pipe[-1].append(("lit", text[1:-1]))
        elif kind == "num":
            pipe[-1].append(("lit", float(text) if "." in text else int(text)))
        elif kind == "ident" and text in ("true", "false", "nil"):
            pipe[-1].append(("lit", {"true": True, "false": False, "nil": None}[text]))
        else:
            pipe[-1].append((kind, text))
        i += 1
    if any(not cmd for cmd in pipe):
        raise TemplateError("empty command in a pipeline")
    return pipe, i


def _pipe_of(body: str) -> list[Any]:
    tokens = _tokens(body)
    pipe, end = _parse_pipe(tokens)
    if end != len(tokens):
        raise TemplateError(f"unbalanced ) in {{{{ {body} }}}}")
    return pipe


def _parse(source: str, defines: dict[str, list[Any]]) -> list[Any]:
    """The node tree of one template file; ``define`` blocks go into ``defines``."""
    root: list[Any] = []
    stack: list[tuple[str, Any, list[Any]]] = []  # (kind, block or name, node list)
    current = root
    for kind, text in _split(source):
        if kind == "text":
            if text:
                current.append(_Text(text))
            continue
        if text.startswith("/*"):
            if not text.endswith("*/"):
                raise TemplateError(f"unterminated comment {text!r}")
            continue
        word, _, rest = text.partition(" ")
        if word in ("if", "with"):
            block = _Block(word, [(_pipe_of(rest), [])])
            current.append(block)
            stack.append((word, block, current))
            current = block.branches[0][1]
        elif word == "else":
            if not stack or stack[-1][0] not in ("if", "with"):
                raise TemplateError("else outside if/with")
            block = stack[-1][1]
            cond = None
            if rest.startswith("if "):
                cond = _pipe_of(rest[3:])
            elif rest:
                raise TemplateError(f"unsupported else form {text!r}")
            block.branches.append((cond, []))
            current = block.branches[-1][1]
        elif word == "define":
            name = json.loads(rest.strip())
            body: list[Any] = []
            stack.append(("define", name, current))
            current = body
            defines[name] = body
        elif word == "end":
            if not stack:
                raise TemplateError("end without a block")
            _, _, current = stack.pop()
        elif word in ("range", "template", "block", "break", "continue") or ":=" in text:
            raise TemplateError(f"{{{{ {text} }}}} is outside the supported subset")
        else:
            current.append(_Action(_pipe_of(text)))
    if stack:
        raise TemplateError(f"unclosed {stack[-1][0]}")
    return root


# --- evaluation -----------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, Mapping | list | tuple) and len(value) == 0
    )


def _go_str(value: Any) -> str:
    """What ``{{ value }}`` prints."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"printing a {type(value).__name__} is outside the supported subset")


def _indent(n: int, text: str) -> str:
    pad = " " * n
    return pad + text.replace("\n", "\n" + pad)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _fail(message: str) -> str:
    raise TemplateError(f"fail: {message}")


def _index(collection: Any, *keys: Any) -> Any:
    for key in keys:
        collection = collection[key] if collection is not None else None
    return collection


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


_FUNCS: dict[str, Callable[..., Any]] = {
    "quote": lambda *vs: " ".join(json.dumps(_go_str(v), ensure_ascii=False) for v in vs),
    "default": lambda dflt, *given: given[0] if given and _truth(given[0]) else dflt,
    "toYaml": _to_yaml,
    "indent": _indent,
    "nindent": lambda n, text: "\n" + _indent(n, text),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "not": lambda v: not _truth(v),
    "and": _and,
    "or": _or,
    "index": _index,
    "sha256sum": lambda s: hashlib.sha256(s.encode()).hexdigest(),
    "fail": _fail,
}


class _Renderer:
    def __init__(self, defines: dict[str, list[Any]]) -> None:
        self.defines = defines

    def render(self, nodes: list[Any], dot: Any, root: Any) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(_go_str(self.pipe(node.pipe, dot, root)))
            else:
                out.append(self.block(node, dot, root))
        return "".join(out)

    def block(self, block: _Block, dot: Any, root: Any) -> str:
        for cond, body in block.branches:
            if cond is None:
                return self.render(body, dot, root)
            value = self.pipe(cond, dot, root)
            if _truth(value):
                return self.render(body, value if block.kind == "with" else dot, root)
        return ""

    def pipe(self, pipe: list[Any], dot: Any, root: Any) -> Any:
        value: Any = _NOTHING
        for cmd in pipe:
            value = self.command(cmd, dot, root, value)
        return value

    def command(self, cmd: list[Any], dot: Any, root: Any, piped: Any) -> Any:
        head_kind, head = cmd[0]
        if head_kind == "ident":
            args = [self.operand(op, dot, root) for op in cmd[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            if head == "include":
                name, data = args
                if name not in self.defines:
                    raise TemplateError(f"no template {name!r}")
                return self.render(self.defines[name], data, data)
            if head not in _FUNCS:
                raise TemplateError(f"function {head!r} is outside the supported subset")
            return _FUNCS[head](*args)
        if len(cmd) > 1 or piped is not _NOTHING:
            raise TemplateError(f"{head!r} is not a function")
        return self.operand(cmd[0], dot, root)

    def operand(self, op: tuple[str, Any], dot: Any, root: Any) -> Any:
        kind, value = op
        if kind == "lit":
            return value
        if kind == "pipe":
            return self.pipe(value, dot, root)
        if kind == "chain":
            sub, path = value
            return self.field(self.pipe(sub, dot, root), path)
        if kind == "field":
            base, path = (root, value[1:]) if value.startswith("$") else (dot, value)
            return self.field(base, path)
        raise TemplateError(f"unexpected {value!r}")

    @staticmethod
    def field(base: Any, path: str) -> Any:
        """``base.A.b`` for path ``.A.b``: a nil base is an error, a missing key is nil."""
        value = path
        for name in [p for p in path.split(".") if p]:
            if base is None:
                raise TemplateError(f"nil pointer evaluating {value}")
            if not isinstance(base, Mapping):
                raise TemplateError(f"{value}: cannot take field {name} of {base!r}")
            base = base.get(name)
        return base


_NOTHING = object()


# --- charts ---------------------------------------------------------------------------------


def merge_values(base: Any, override: Any) -> Any:
    """Helm's coalescing of an override over values: maps merge, null deletes, else replace."""
    if not isinstance(base, Mapping) or not isinstance(override, Mapping):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_values(merged.get(key), value)
    return merged


@dataclass
class Chart:
    """A chart directory: Chart.yaml, values.yaml, templates/."""

    path: Path

    @property
    def meta(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.path / "Chart.yaml").read_text()))

    @property
    def values(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.path / "values.yaml").read_text()) or {})


def render_string(source: str, data: Any) -> str:
    """Render one template string against ``data`` (tests of the subset itself)."""
    defines: dict[str, list[Any]] = {}
    nodes = _parse(source, defines)
    return _Renderer(defines).render(nodes, data, data)


def render_chart(
    chart: Chart,
    overrides: Mapping[str, Any] | None = None,
    release: str = "nsm-forwarder",
    namespace: str = "nsm-system",
) -> dict[str, str]:
    """``{template path: rendered text}`` of every manifest template, as ``helm template``."""
    meta = chart.meta
    data = {
        "Values": merge_values(chart.values, dict(overrides or {})),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {
            "Name": meta["name"],
            "Version": meta["version"],
            "AppVersion": meta.get("appVersion", ""),
        },
    }
    defines: dict[str, list[Any]] = {}
    trees: dict[str, list[Any]] = {}
    for path in sorted((chart.path / "templates").iterdir()):
        trees[path.name] = _parse(path.read_text(), defines)
    renderer = _Renderer(defines)
    return {
        f"templates/{name}": renderer.render(nodes, data, data)
        for name, nodes in trees.items()
        if not name.startswith("_") and name != "NOTES.txt"
    }
