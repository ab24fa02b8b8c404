"""OTLP/JSON parsing and dumping: hex ids, int enums, camelCase, int64 strings, precise errors."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from watchman_collector.otlp_json import (
    OTLPJSONError,
    detect_signal,
    dump_request,
    parse_logs_request,
    parse_metrics_request,
    parse_trace_request,
)

TESTDATA = Path(__file__).parent / "testdata"
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "eee19b7ec3c1b173"


def _span(**overrides: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE_HEX,
        "spanId": SPAN_HEX,
        "parentSpanId": PARENT_HEX,
        "name": "GET /",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "status": {"code": 2},
    }
    span.update(overrides)
    return span


def _request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]
                },
                "scopeSpans": [{"scope": {"name": "lib"}, "spans": list(spans)}],
            }
        ]
    }


def _sdk_request() -> ExportTraceServiceRequest:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span(
            "SELECT", kind=SpanKind.CLIENT, links=[Link(parent.get_span_context())]
        ) as child:
            child.set_attribute("db.system.name", "postgresql")
            child.set_attribute("db.response.returned_rows", 3)
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def test_hex_ids_become_bytes() -> None:
    """traceId, spanId and parentSpanId are read as hex, not base64."""
    req = parse_trace_request(json.dumps(_request(_span())))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX)
    assert span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == bytes.fromhex(PARENT_HEX)


def test_hex_is_case_insensitive() -> None:
    """Upper-case hex ids (the spec's own example) parse like lower-case ones."""
    req = parse_trace_request(json.dumps(_request(_span(traceId=TRACE_HEX.upper()))))
    assert req.resource_spans[0].scope_spans[0].spans[0].trace_id == bytes.fromhex(TRACE_HEX)


def test_wrong_length_id_names_the_path() -> None:
    """A trace id of the wrong length is an error naming the exact field and both lengths."""
    spans = [_span(spanId=f"{i:016x}") for i in range(1, 4)] + [_span(traceId=TRACE_HEX[:30])]
    with pytest.raises(OTLPJSONError) as info:
        parse_trace_request(json.dumps(_request(*spans)))
    assert str(info.value) == (
        "resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex characters, got 30"
    )


def test_non_hex_id_is_an_error() -> None:
    """A span id that is not hex is an OTLPJSONError naming the field."""
    with pytest.raises(OTLPJSONError, match=r"spans\[0\]\.spanId: not a hex string"):
        parse_trace_request(json.dumps(_request(_span(spanId="zz" * 8))))


def test_base64_id_is_rejected() -> None:
    """A base64 id (what json_format would write) is not mistaken for a valid OTLP/JSON id."""
    b64 = base64.b64encode(bytes.fromhex(TRACE_HEX)).decode()
    with pytest.raises(OTLPJSONError, match="traceId"):
        parse_trace_request(json.dumps(_request(_span(traceId=b64))))


def test_empty_ids_are_empty_bytes() -> None:
    """An empty parentSpanId (a root span) parses to empty bytes, as protobuf's default."""
    req = parse_trace_request(json.dumps(_request(_span(parentSpanId=""))))
    assert req.resource_spans[0].scope_spans[0].spans[0].parent_span_id == b""


def test_enums_as_ints_and_names() -> None:
    """Span kind and status code parse from integers and, leniently, from enum names."""
    as_int = parse_trace_request(json.dumps(_request(_span(kind=3))))
    as_name = parse_trace_request(
        json.dumps(_request(_span(kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_ERROR"})))
    )
    assert as_int.resource_spans[0].scope_spans[0].spans[0].kind == 3
    span = as_name.resource_spans[0].scope_spans[0].spans[0]
    assert (span.kind, span.status.code) == (3, 2)


def test_int64_as_string_or_number() -> None:
    """Timestamps parse from decimal strings and from JSON numbers alike."""
    req = parse_trace_request(
        json.dumps(_request(_span(startTimeUnixNano=1544712660000000000, endTimeUnixNano="7")))
    )
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (1544712660000000000, 7)


def test_snake_case_keys_are_accepted() -> None:
    """Proto field names (snake_case) work as keys, ids included."""
    doc = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_HEX,
                                "span_id": SPAN_HEX,
                                "parent_span_id": PARENT_HEX,
                                "start_time_unix_nano": "5",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = parse_trace_request(json.dumps(doc)).resource_spans[0].scope_spans[0].spans[0]
    assert span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == bytes.fromhex(PARENT_HEX)
    assert span.start_time_unix_nano == 5


def test_unknown_fields_are_ignored() -> None:
    """Fields the schema does not know, at any depth, are skipped, not errors."""
    doc = _request(_span(futureField={"x": 1}, anotherOne=[1, 2]))
    doc["extra"] = True
    doc["resourceSpans"][0]["schemaUrlV9"] = "x"
    span = parse_trace_request(json.dumps(doc)).resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "GET /"


def test_links_ids_are_hex() -> None:
    """Span link ids are hex too."""
    req = parse_trace_request(
        json.dumps(_request(_span(links=[{"traceId": TRACE_HEX, "spanId": PARENT_HEX}])))
    )
    link = req.resource_spans[0].scope_spans[0].spans[0].links[0]
    assert (link.trace_id, link.span_id) == (bytes.fromhex(TRACE_HEX), bytes.fromhex(PARENT_HEX))


def test_invalid_json_is_an_otlp_json_error() -> None:
    """Invalid JSON, a non-object and a wrongly typed field each raise OTLPJSONError."""
    for bad in (b"{not json", b"[1, 2]", b"\xff\xfe", json.dumps({"resourceSpans": {"a": 1}})):
        with pytest.raises(OTLPJSONError):
            parse_trace_request(bad)
    with pytest.raises(OTLPJSONError, match="startTimeUnixNano"):
        parse_trace_request(json.dumps(_request(_span(startTimeUnixNano="soon"))))


def test_bytes_value_stays_base64() -> None:
    """AnyValue.bytesValue keeps the standard base64 mapping; only ids are hex."""
    raw = b"\x00\xffdata"
    attr = {"key": "k", "value": {"bytesValue": base64.b64encode(raw).decode()}}
    req = parse_trace_request(json.dumps(_request(_span(attributes=[attr]))))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.attributes[0].value.bytes_value == raw
    assert (
        json.loads(dump_request(req))["resourceSpans"][0]["scopeSpans"][0]["spans"][0][
            "attributes"
        ][0]["value"]["bytesValue"]
        == base64.b64encode(raw).decode()
    )


def test_dump_round_trips_sdk_spans() -> None:
    """What the SDK's own encoder produced survives dump → parse unchanged."""
    req = _sdk_request()
    line = dump_request(req)
    assert "\n" not in line
    assert parse_trace_request(line) == req


def test_dump_uses_hex_ids_and_int_enums() -> None:
    """dump_request writes hex ids, integer enums and camelCase keys."""
    req = parse_trace_request(json.dumps(_request(_span(kind=3))))
    span = json.loads(dump_request(req))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE_HEX
    assert span["parentSpanId"] == PARENT_HEX
    assert span["kind"] == 3
    assert span["status"] == {"code": 2}
    assert span["startTimeUnixNano"] == "1544712660000000000"


def test_mapping_input_is_not_mutated() -> None:
    """Parsing an already-loaded dict leaves the caller's object as it was."""
    doc = _request(_span())
    before = json.dumps(doc)
    parse_trace_request(doc)
    assert json.dumps(doc) == before


def test_metrics_exemplar_ids_are_hex() -> None:
    """Exemplars' trace and span ids in metrics requests are hex and round-trip."""
    doc = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "http.server.request.duration",
                                "histogram": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "count": "1",
                                            "exemplars": [
                                                {
                                                    "asDouble": 0.5,
                                                    "traceId": TRACE_HEX,
                                                    "spanId": SPAN_HEX,
                                                }
                                            ],
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    req = parse_metrics_request(json.dumps(doc))
    assert isinstance(req, ExportMetricsServiceRequest)
    point = req.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    assert point.exemplars[0].trace_id == bytes.fromhex(TRACE_HEX)
    assert parse_metrics_request(dump_request(req)) == req


def test_log_record_ids_are_hex() -> None:
    """Log records' trace and span ids are hex; a bad one names its path."""
    record = {"traceId": TRACE_HEX, "spanId": SPAN_HEX, "body": {"stringValue": "hi"}}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    req = parse_logs_request(json.dumps(doc))
    assert isinstance(req, ExportLogsServiceRequest)
    assert req.resource_logs[0].scope_logs[0].log_records[0].span_id == bytes.fromhex(SPAN_HEX)
    record["spanId"] = "abc"
    with pytest.raises(OTLPJSONError, match=r"logRecords\[0\]\.spanId: expected 16 hex"):
        parse_logs_request(json.dumps(doc))


def test_detect_signal() -> None:
    """The signal is told by the top-level key, from bytes, str or a dict."""
    assert detect_signal(b'{"resourceSpans": []}') == "traces"
    assert detect_signal('{"resource_metrics": []}') == "metrics"
    assert detect_signal({"resourceLogs": []}) == "logs"
    with pytest.raises(OTLPJSONError, match="not an OTLP export request"):
        detect_signal(b"{}")


def _reference(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """What json_format alone makes of a document once its hex ids are base64."""
    doc = json.loads(json.dumps(doc))
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for holder in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if holder.get(key):
                            holder[key] = base64.b64encode(bytes.fromhex(holder[key])).decode()
    return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)


TRICKY_SPANS = [
    _span(),
    _span(kind=0, status={"code": 1, "message": "ok"}, flags=257, traceState="a=b"),
    _span(
        attributes=[
            {"key": "s", "value": {"stringValue": "x"}},
            {"key": "i", "value": {"intValue": "-42"}},
            {"key": "j", "value": {"intValue": 7}},
            {"key": "d", "value": {"doubleValue": 1}},
            {"key": "b", "value": {"boolValue": False}},
        ],
        droppedAttributesCount=3,
    ),
    _span(attributes=[{"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}]}}}]),
    _span(attributes=[{"key": "kv", "value": {"kvlistValue": {"values": []}}}, {"key": "e"}]),
    _span(attributes=[{"key": "n", "value": {"doubleValue": "NaN"}}]),
    _span(events=[{"name": "exception", "timeUnixNano": "9"}], droppedEventsCount=1),
    _span(links=[{"traceId": TRACE_HEX, "spanId": SPAN_HEX, "attributes": []}]),
    _span(kind="SPAN_KIND_PRODUCER", name=None, status=None),
    _span(startTimeUnixNano=12, endTimeUnixNano="18446744073709551615", unknownKey={"x": 1}),
    _span(status={"code": "STATUS_CODE_OK"}, attributes=None),
]


@pytest.mark.parametrize("index", range(len(TRICKY_SPANS)))
def test_fast_span_path_matches_json_format(index: int) -> None:
    """Plain spans built directly equal what json_format makes; unusual ones take its path."""
    doc = _request(_span(spanId="00000000000000aa"), TRICKY_SPANS[index], _span())
    assert parse_trace_request(json.dumps(doc)) == _reference(doc)


def test_fixtures_match_json_format() -> None:
    """Every span of the OTLP JSON test fixtures parses as json_format would parse it."""
    lines = [
        line
        for path in sorted(TESTDATA.glob("*.json"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert lines
    for line in lines:
        assert parse_trace_request(line) == _reference(json.loads(line))


def test_slow_path_errors_name_the_span() -> None:
    """A bad value in a span that takes json_format's path is reported with the span's path."""
    doc = _request(_span(), _span(startTimeUnixNano="soon"))
    with pytest.raises(OTLPJSONError, match=r"^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[1\]: "):
        parse_trace_request(json.dumps(doc))


def test_non_finite_doubles_follow_json_format() -> None:
    """Bare NaN, Infinity and huge integers as doubles are judged as json_format judges them."""
    for value in ("NaN", "Infinity", "1e400", str(10**400)):
        line = json.dumps(_request(_span())).replace(
            '"status"',
            f'"attributes": [{{"key": "d", "value": {{"doubleValue": {value}}}}}], "status"',
        )
        try:
            expected: ExportTraceServiceRequest | type[Exception] = _reference(json.loads(line))
        except (json_format.ParseError, OverflowError):
            expected = OTLPJSONError
        if expected is OTLPJSONError:
            with pytest.raises(OTLPJSONError):
                parse_trace_request(line)
        else:
            assert parse_trace_request(line) == expected


def test_mutated_json_only_raises_otlp_json_error() -> None:
    """Randomly mutated documents parse or raise OTLPJSONError, never anything else."""
    import random

    base = dump_request(_sdk_request())
    alphabet = '{}[]",:0123456789abcdefxyzE.-+ \\'
    rng = random.Random(11)
    parsed = 0
    for _ in range(400):
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        try:
            parse_trace_request("".join(chars))
        except OTLPJSONError:
            continue
        parsed += 1
    assert parsed > 0


def _nodes(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value in a loaded JSON document."""
    out: list[tuple[Any, Any]] = []
    keys = node.keys() if isinstance(node, dict) else range(len(node))
    for key in keys:
        out.append((node, key))
        if isinstance(node[key], dict | list):
            out.extend(_nodes(node[key]))
    return out


def test_values_of_the_wrong_type_only_raise_otlp_json_error() -> None:
    """Any value swapped for another JSON type parses or raises OTLPJSONError."""
    import random

    base = dump_request(_sdk_request())
    replacements: list[Any] = [None, True, -1, 2**70, 1.5, "", "zz", [], [1], {}, {"a": 1}]
    rng = random.Random(5)
    outcomes = set()
    for _ in range(400):
        doc = json.loads(base)
        for _ in range(rng.randint(1, 2)):
            container, key = rng.choice(_nodes(doc))
            container[key] = copy.deepcopy(rng.choice(replacements))
        try:
            parse_trace_request(json.dumps(doc))
            outcomes.add("parsed")
        except OTLPJSONError:
            outcomes.add("refused")
    assert outcomes == {"parsed", "refused"}
