"""The results pages give per-seed figures with their mean in brackets, "71.8 / 72.1 / 72.5 (72.1)". A mistyped mean
is a wrong result nobody sees (the 16-epoch face-only mean was given as 72.7 where its seven figures average 72.4):
every such mean in README.md, docs/ and results/ must be the mean of the figures before it."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "results").glob("*.md"))]
#: two to twelve figures with one decimal, "/"-separated, then "(mean)" closed by ")" or ";" (bold allowed); a
#: bracket that goes on with other figures ("(32.2 / 18.2)", "(mean 61.6 against 60.0") is not a mean of the list
MEAN = re.compile(r"(?<![\d.])(\d{1,3}\.\d(?:\s*/\s*\d{1,3}\.\d){1,11})\s*\((?:\*\*)?(\d{1,3}\.\d)(?:\*\*)?[;)]")
#: each figure and the mean are rounded to a tenth: their mean may differ from the stated one by up to 0.1
TOLERANCE = 0.1 + 1e-9


def stated_means(text: str) -> list[tuple[str, list[float], float]]:
    text = re.sub(r"\n\s*", " ", text)  # a list may wrap over lines
    return [
        (m.group(0), [float(v) for v in re.split(r"\s*/\s*", m.group(1))], float(m.group(2)))
        for m in MEAN.finditer(text)
    ]


def test_the_check_finds_the_mean_that_was_mistyped():
    row = "| 16 | 71.8 / 72.1 / 72.5 / 72.0 / 73.3 / 72.0 / 72.9 (72.7) [77.7] | 81.2 / 79.4 (**80.3**) |"
    (_, figures, mean), (_, _, bold) = stated_means(row)
    assert abs(statistics.mean(figures) - mean) > TOLERANCE  # 72.4
    assert bold == 80.3
    assert stated_means("42.1 / 38.7 / 39.6 (15.6 / 15.6 / 15.8) and 73.0 / 72.7 (mean 61.6 against 60.0)") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_stated_mean_is_the_mean_of_its_figures(page):
    wrong = [
        f"{found} (their mean is {statistics.mean(figures):.2f})"
        for found, figures, mean in stated_means(page.read_text())
        if abs(statistics.mean(figures) - mean) > TOLERANCE
    ]
    assert not wrong, f"{page.name}: " + "; ".join(wrong)
