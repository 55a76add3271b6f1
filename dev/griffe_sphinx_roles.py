"""A griffe extension for the docs build: Sphinx roles in docstrings (``:func:`~pkg.f```, ``:class:`X```) become
Markdown code spans, so the Google-style pages render them cleanly without editing every module
(``mkdocs.yml``: ``extensions: [dev/griffe_sphinx_roles.py]``)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")


def sphinx_roles_to_markdown(text: str) -> str:
    """``:func:`~a.b.c``` -> ``c``, ``:class:`a.B``` -> ``a.B`` (as code spans)."""
    return _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = sphinx_roles_to_markdown(obj.docstring.value)
