"""Griffe extension for the docs build: adapt ebmcmc's docstring habits to Markdown.

* ebmcmc's docstrings head their doctests ``Example:``. Griffe's Google parser recognises only
  the plural ``Examples:`` as an examples section and renders the singular as an admonition of
  Markdown text, in which ``>>>`` lines turn into block quotes and printed lists such as
  ``[0.1, 0.2]`` into broken reference links. A line that is exactly ``Example:`` is renamed
  ``Examples:`` before the docstring is parsed, so doctests render as Python console blocks.
* Sphinx roles (``:class:`~ebmcmc.Trace```) would show up verbatim in Markdown; they become
  plain inline code (``Trace``).

Library files are left untouched: this runs on griffe's copy of each docstring.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class ExampleSections(Extension):
    """Rewrite ``Example:`` headings and Sphinx roles in every loaded docstring."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, value)
