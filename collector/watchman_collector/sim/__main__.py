"""`python -m watchman_collector.sim`: a topology with faults → OTLP JSON lines and ground truth."""

from __future__ import annotations

import argparse
import sys
import time

from watchman_collector.sim.faults import Noise, parse_fault
from watchman_collector.sim.scenario import Scenario
from watchman_collector.sim.simulator import Simulator
from watchman_collector.sim.topology import TOPOLOGIES, get_topology
from watchman_collector.sim.writer import truth_path, write_jsonl, write_truth

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line; `watchman simulate` can reuse it."""
    parser = argparse.ArgumentParser(
        prog="python -m watchman_collector.sim",
        description="Write the OTLP a microservice topology's SDKs would export, with faults "
        "injected, as OTLP JSON lines, and the run's ground truth beside it.",
    )
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="shop")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="TARGET:KIND[=MAG]@ONSET+DURATION",
        help="e.g. payments:crash@300+120; kinds: error, latency, ramp, crash (repeatable)",
    )
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=20.0, help="entry requests per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-noise", action="store_true", help="no latency blips or steps")
    parser.add_argument("--out", required=True, help="OTLP JSON lines; .gz compresses")
    parser.add_argument("--truth", help="ground truth JSON (default: beside --out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; 2 on bad arguments, 1 when the output cannot be written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        scenario = Scenario(
            get_topology(args.topology),
            seed=args.seed,
            duration_s=args.duration,
            rate=args.rate,
            faults=tuple(parse_fault(text) for text in args.fault),
            noise=Noise() if args.no_noise else None,
        )
    except (KeyError, ValueError) as exc:
        parser.error(str(exc).strip("'\""))
    began = time.perf_counter()
    sim = Simulator(scenario)
    try:
        lines = write_jsonl(sim.exports(), args.out)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    truth_file = args.truth or truth_path(args.out)
    write_truth(sim.truth, truth_file)
    truth = sim.truth
    print(
        f"{args.out}: {lines} exports, {truth.spans} spans ({truth.spans_dropped} lost in SDK "
        f"queues), {truth.requests} requests, {time.perf_counter() - began:.1f}s; "
        f"truth: {truth_file}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
