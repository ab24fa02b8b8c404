"""``python -m benchmarks [--quick] [--repeat N] [--json PATH] [--only NAME]``: run and report."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import Figure, render_repeats, render_table, run, write_json

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole suite N times in a row and compare the ratios of the runs",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    runs: list[list[Figure]] = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"== run {i + 1} of {args.repeat}", flush=True)
        runs.append(run(quick=args.quick, only=args.only))
        print(render_table(runs[-1]), flush=True)
    if args.repeat > 1:
        print(f"\n== the {args.repeat} runs side by side")
        print(render_repeats(runs))
    write_json(runs, args.json, quick=args.quick)
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
