"""The minimal Helm renderer keeps Go text/template's semantics for the subset it supports, and
refuses what it does not support."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helmrender import TemplateError, merge_values, render_string

DATA = {"Values": {"a": "x", "n": 0, "m": {"k": [1, 2]}, "t": True, "e": ""}}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("a\n  {{- .Values.a }}\nb", "ax\nb"),  # {{- eats newlines and spaces before
        ("{{ .Values.a -}}\n\n  b", "xb"),  # -}} eats them after
        ("{{ .Values.missing }}|{{ .Values.n }}|{{ .Values.t }}", "|0|true"),
        ("{{ if .Values.n }}y{{ else if .Values.e }}e{{ else }}n{{ end }}", "n"),
        ("{{ with .Values.m }}{{ .k | toYaml }}{{ end }}", "- 1\n- 2"),
        ("{{ with .Values.e }}y{{ else }}{{ .Values.a }}{{ end }}", "x"),
        ('{{ .Values.e | default "d" | quote }}', '"d"'),
        ("{{ .Values.t | quote }}", '"true"'),
        ("k:{{ .Values.m | toYaml | nindent 2 }}", "k:\n  k:\n  - 1\n  - 2"),
        ('{{ if and (eq .Values.a "x") (not .Values.n) }}y{{ end }}', "y"),
        ('{{ (index .Values "m").k | len0 }}', None),
        ('{{- define "t" }}[{{ .a }}]{{ end }}{{ include "t" .Values }}', "[x]"),
        ("{{/* a comment */}}z", "z"),
        ("{{ $.Values.a }}", "x"),
    ],
)
def test_helmrender_follows_go_template_semantics(template: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(TemplateError, match="outside the supported subset"):
            render_string(template, DATA)
    else:
        assert render_string(template, DATA) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ range .Values.m.k }}{{ . }}{{ end }}",
        "{{ $x := 1 }}",
        "{{ .Values.a.b.c }}",
        "{{ end }}",
    ],
)
def test_helmrender_refuses_what_it_does_not_support(template: str) -> None:
    with pytest.raises(TemplateError):
        render_string(template, DATA)


def test_helmrender_merges_values_as_helm() -> None:
    base: dict[str, Any] = {"a": {"b": 1, "c": [1]}, "d": 2}
    assert merge_values(base, {"a": {"c": [2]}, "d": None}) == {"a": {"b": 1, "c": [2]}}
