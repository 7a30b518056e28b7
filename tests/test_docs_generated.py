"""The board tables in the README are what the committed records give (`pmlbal leaderboard --docs`)."""

from pathlib import Path

import pytest

from pmlbal.leaderboard import BOARD_MARKER, fill_board_markers
from pmlbal.records import iter_records

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md"]


@pytest.fixture(scope="module")
def records():
    return list(iter_records(REPO / "results", on_error=lambda msg: pytest.fail(f"unreadable record: {msg}")))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_board_tables_in_the_docs_match_the_records(doc, records):
    text = doc.read_text()
    regenerated = fill_board_markers(text, records, REPO / "results", doc)
    assert regenerated == text, (f"{doc.relative_to(REPO)}: its board tables differ from the records; run "
                                 f"`pmlbal leaderboard --docs {doc.relative_to(REPO)}`")


def test_the_readme_shows_generated_boards():
    assert len(BOARD_MARKER.findall((REPO / "README.md").read_text())) >= 2
