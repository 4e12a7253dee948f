"""MkDocs hook: links from a docs page to a file of the repository outside docs/.

On GitHub ``[examples/two_heads.py](../examples/two_heads.py)`` opens the file; the site has no
copy of it, so MkDocs would report a broken link. Here such a link becomes its text when the file
exists, and a warning (an error under ``--strict``) when it does not, so both readings stay
right and a link to a moved or deleted file still fails the build. Images outside docs/ cannot be
shown by the site at all: they are reported too (copy them under docs/figures/).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("mkdocs.hooks.repo_links")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def outside_target(target: str, page_dir: Path, docs_dir: Path) -> Path | None:
    """The repository path a relative link points to, when it leaves docs/; else None."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    resolved = (page_dir / parts.path).resolve()
    return None if resolved.is_relative_to(docs_dir) else resolved


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    page_dir = (docs_dir / page.file.src_path).parent

    def replace(match: re.Match) -> str:
        bang, text, target = match.groups()
        path = outside_target(target, page_dir, docs_dir)
        if path is None:
            return match.group(0)
        if bang:
            log.warning(f"{page.file.src_path}: image '{target}' lies outside docs/; the site cannot "
                        "show it: copy it under docs/figures/")
        elif not path.exists():
            log.warning(f"{page.file.src_path}: link '{target}' points to a missing file {path}")
        return text if not bang else match.group(0)

    # code blocks are left as they are: a "[x](y)" there is text, not a link
    pieces, last = [], 0
    for block in FENCE.finditer(markdown):
        pieces.append(LINK.sub(replace, markdown[last:block.start()]))
        pieces.append(block.group(0))
        last = block.end()
    pieces.append(LINK.sub(replace, markdown[last:]))
    return "".join(pieces)
