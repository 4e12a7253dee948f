"""MkDocs hook: the API reference without reST role names.

fmprune's docstrings name other objects the Sphinx way (``:class:`Criterion```, ``:func:`trace```),
which reads well in ``help()``; mkdocstrings renders the name as code but leaves the role in front
of it (":class: Criterion"). This drops the role, keeping the code span.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub("", html)
