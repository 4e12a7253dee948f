"""The one markdown table writer (reports, comparisons, rank quality)."""

from __future__ import annotations


def markdown_table(rows: list[dict[str, str]], text_columns: int = 1) -> str:
    """``rows`` (one dict per row, the first row's keys as the header) as a markdown table: the
    first ``text_columns`` columns left-aligned (names), the rest right-aligned (numbers)."""
    head = list(rows[0])
    rule = "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(head))) + "|"
    return "\n".join(["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows])
