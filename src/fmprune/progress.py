"""Progress that suits where it goes: a live tqdm bar on a terminal; in a file or a pipe, plain
lines (one per tenth of the work, or every 30 s, and one at the end) with no carriage returns or
cursor moves, so ``fmprune train > log 2>&1`` stays a readable log."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

PLAIN_EVERY_S = 30.0


class PlainProgress:
    """The part of tqdm's interface the commands use, printing whole lines."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
                 file: Any = None, **_: Any) -> None:
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.file = file or sys.stderr
        self.n, self.postfix = 0, ""
        self._shown_n, self._shown_at = 0, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def reset(self, total: int | None = None) -> None:
        """Start over (the next epoch's iterations), as tqdm's ``reset``."""
        self.close()
        self.n, self._shown_n, self._shown_at = 0, 0, time.monotonic()
        if total is not None:
            self.total = total

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        tenth = max(1, (self.total or 0) // 10)
        due = (self.total and self.n - self._shown_n >= tenth) or time.monotonic() - self._shown_at >= PLAIN_EVERY_S
        if due and self.n != self._shown_n:
            self._show()

    def _show(self) -> None:
        if self.disable:
            return
        of = f"/{self.total}" if self.total else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{extra}", file=self.file, flush=True)
        self._shown_n, self._shown_at = self.n, time.monotonic()

    def close(self) -> None:
        if self.n != self._shown_n:
            self._show()

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Progress = tqdm | PlainProgress


def interactive(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(**kwargs: Any) -> Progress:
    """A progress bar on stderr: tqdm's on a terminal, plain lines elsewhere."""
    kwargs.setdefault("file", sys.stderr)
    if interactive(kwargs["file"]):
        return tqdm(dynamic_ncols=True, **kwargs)
    kwargs.pop("position", None)
    kwargs.pop("leave", None)
    return PlainProgress(**kwargs)


def write_line(text: str) -> None:
    """A result line on stdout; beside live bars, through tqdm.write, which keeps them intact."""
    if interactive():
        tqdm.write(text)
    else:
        print(text, flush=True)
