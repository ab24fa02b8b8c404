"""A fault-injection simulator: realistic OTLP from microservice topologies, with ground truth.

`simulate(Scenario(get_topology("shop"), faults=(parse_fault("payments:crash@300+120"),)))`
returns the export requests the services' SDKs would send, in order, and the `GroundTruth` of
the run. `python -m watchman_collector.sim --help` writes them as OTLP JSON lines.
"""

from watchman_collector.sim.faults import Blip, Fault, FaultKind, Noise, TrafficStep, parse_fault
from watchman_collector.sim.process import Export
from watchman_collector.sim.scenario import FaultTruth, GroundTruth, Impact, Scenario
from watchman_collector.sim.simulator import Simulator, simulate
from watchman_collector.sim.topology import (
    TOPOLOGIES,
    Database,
    Downstream,
    Endpoint,
    External,
    Service,
    Topic,
    Topology,
    get_topology,
)
from watchman_collector.sim.writer import truth_path, write_jsonl, write_truth

__all__ = [
    "TOPOLOGIES",
    "Blip",
    "Database",
    "Downstream",
    "Endpoint",
    "Export",
    "External",
    "Fault",
    "FaultKind",
    "FaultTruth",
    "GroundTruth",
    "Impact",
    "Noise",
    "Scenario",
    "Service",
    "Simulator",
    "Topic",
    "Topology",
    "TrafficStep",
    "get_topology",
    "parse_fault",
    "simulate",
    "truth_path",
    "write_jsonl",
    "write_truth",
]
