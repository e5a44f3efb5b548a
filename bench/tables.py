"""Copy the benchmarks' Markdown tables into docs/BENCHMARKS.md (the last step of `make bench`).

docs/BENCHMARKS.md marks where each generated table goes:

    <!-- bench:utility-quick -->
    ...replaced by bench/results/utility-quick.md...
    <!-- /bench:utility-quick -->

A marked block whose results file does not exist is left as it is (that benchmark was not run), so the
prose around the tables and the figures of other runs stay. Prints what it replaced.

    .venv/bin/python -m bench.tables
"""

import argparse
import re
from pathlib import Path

BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.DOTALL)


def fill(document: str, results: Path) -> tuple[str, list[str], list[str]]:
    """`document` with every marked block whose `results/NAME.md` exists replaced by that file:
    (new document, names replaced, names left as they were)."""
    replaced, kept = [], []

    def swap(m: re.Match) -> str:
        table = results / f"{m['name']}.md"
        if not table.is_file():
            kept.append(m["name"])
            return m[0]
        replaced.append(m["name"])
        return m[1] + table.read_text().rstrip("\n") + "\n" + m[4]

    return BLOCK.sub(swap, document), replaced, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--doc", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    document, replaced, kept = fill(args.doc.read_text(), args.results)
    args.doc.write_text(document)
    print(f"{args.doc}: replaced {', '.join(replaced) or 'nothing'}; not run, kept: {', '.join(kept) or 'none'}")


if __name__ == "__main__":
    main()
