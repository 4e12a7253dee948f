"""The documentation site builds in strict mode (a broken link, anchor, nav entry or API reference
is an error), and the README's relative links point to files that exist.

The build needs the ``docs`` extra (``pip install -e '.[docs]'``; ``scripts/setup-env.sh``
installs it, so CI builds the site on every run).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from support.paths import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def relative_links(markdown: str) -> list[str]:
    """Targets of the relative links and images outside code blocks (no URLs, no page anchors)."""
    text = FENCE.sub("", markdown)
    targets = []
    for target in LINK.findall(text):
        parts = urlsplit(target)
        if not (parts.scheme or parts.netloc) and parts.path:
            targets.append(parts.path)
    return targets


def test_the_readme_links_resolve():
    targets = relative_links((ROOT / "README.md").read_text())
    assert any(t.startswith("docs/") for t in targets), "README.md links to no docs page"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_a_missing_link_target_is_found():
    """The check above can fail: a link to a file that is not there is reported."""
    targets = relative_links("[a](docs/index.md) [b](docs/nowhere.md) [c](https://x.org/y.md) [d](#top)\n"
                             "```\n[e](docs/in-code.md)\n```\n")
    assert targets == ["docs/index.md", "docs/nowhere.md"]
    assert not (ROOT / "docs/nowhere.md").exists()


def test_the_site_builds_strictly(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}   # Material's notice about its successor
    # no --quiet: it hides the warnings from the counter that --strict aborts on
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    api = (site / "api" / "pruner" / "index.html").read_text()
    assert "accumulate" in api, "the API reference shows no docstring of Pruner.accumulate"
    assert ":class:" not in api and ":meth:" not in api, "reST roles left in the API reference"


def load_hook():
    spec = importlib.util.spec_from_file_location("repo_links", ROOT / "docs" / "hooks" / "repo_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_links_out_of_docs_become_text_or_fail(caplog):
    """A page's link to a repository file outside docs/ becomes its text in the site when the file
    exists, and a warning (an error under --strict) when it does not; links inside docs/ stay."""
    hook = load_hook()
    page = SimpleNamespace(file=SimpleNamespace(src_path="guides/x.md"))
    config = {"docs_dir": str(ROOT / "docs")}
    markdown = ("[the test](../../tests/tool/test_docs_site.py), [prune](prune.md), "
                "[gone](../../examples/no_such_example.py)\n```\n[kept](../../x.py)\n```\n")
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.repo_links"):
        out = hook.on_page_markdown(markdown, page, config, None)
    assert out.startswith("the test, [prune](prune.md), gone\n```\n[kept](../../x.py)\n```")
    assert [r.getMessage() for r in caplog.records] == [
        f"guides/x.md: link '../../examples/no_such_example.py' points to a missing file "
        f"{ROOT / 'examples' / 'no_such_example.py'}"]
