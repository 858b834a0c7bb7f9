"""A griffe extension for the docs build: telescope's docstrings title their doctests ``Example:``.

Griffe's Google-style parser knows the plural ``Examples:`` (rendered as code blocks); the singular is read
as an admonition and its ``>>>`` lines as Markdown.  This renames the section while the sources are loaded,
so the examples render as code.  Loaded by mkdocs.yml (mkdocstrings' python handler, ``extensions``).
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
