"""``python -m benchmarks [--quick] [--json PATH] [--only NAME]``: run, print a table, save JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import render_table, run, write_json

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick, only=args.only)
    print(render_table(figures))
    write_json(figures, args.json, quick=args.quick)
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
