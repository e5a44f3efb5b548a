"""`make bench` ends by copying each benchmark's Markdown table into docs/BENCHMARKS.md."""

from bench.tables import fill

DOC = """# Benchmarks

Prose stays.

<!-- bench:utility-quick -->
| old | table |
<!-- /bench:utility-quick -->

More prose.

<!-- bench:scaling-quick -->
| scaling, from an earlier run |
<!-- /bench:scaling-quick -->
"""


def test_a_table_that_was_run_replaces_its_block_and_everything_else_stays(tmp_path):
    (tmp_path / "utility-quick.md").write_text("| new | table |\n|---|---|\n\n")
    document, replaced, kept = fill(DOC, tmp_path)
    assert replaced == ["utility-quick"] and kept == ["scaling-quick"]
    assert "| new | table |\n|---|---|\n<!-- /bench:utility-quick -->" in document
    assert "| old | table |" not in document
    assert "| scaling, from an earlier run |" in document  # not run: left as it was
    assert document.replace("| new | table |\n|---|---|\n", "| old | table |\n") == DOC


def test_filling_twice_changes_nothing_more(tmp_path):
    (tmp_path / "utility-quick.md").write_text("| new |\n")
    once, _, _ = fill(DOC, tmp_path)
    assert fill(once, tmp_path)[0] == once
