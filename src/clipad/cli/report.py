"""`python -m clipad.report DIR [DIR ...]`: compare runs or the jobs of a multirun.

Runs that differ only in `seed`/`few_shot_seed` also get a mean ± std row (the few-shot protocol). Runs of
several methods (e.g. `experiment=compare_clip_methods`) first get a table in the papers' layout: one column
per method, one row per dataset and metric group (image AUROC, AP, F1max; pixel AUROC, AP, F1max, AUPRO).

Prints the table and writes report.md and report.csv into the first DIR.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from clipad.report.compare import comparison_rows, method_table, seed_aggregates, to_markdown, write_csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipad.report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or multirun dirs")
    args = parser.parse_args(argv)
    try:
        rows = comparison_rows(args.dirs)
        rows += seed_aggregates(rows)
        methods = method_table(args.dirs)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    markdown = to_markdown(rows)
    if methods is not None:
        markdown = f"{methods}\n{markdown}"
    print(markdown)
    (args.dirs[0] / "report.md").write_text(markdown)
    write_csv(rows, args.dirs[0] / "report.csv")
    print(f"wrote {args.dirs[0] / 'report.md'} and {args.dirs[0] / 'report.csv'} ({len(rows)} runs)")


if __name__ == "__main__":
    main()
