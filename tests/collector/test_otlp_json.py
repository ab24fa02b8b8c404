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
from watchman_collector import otlp_json
from watchman_collector.decode import decode_metrics, decode_traces
from watchman_collector.otlp_json import (
    OTLPJSONError,
    decode_metrics_json,
    decode_trace_json,
    detect_signal,
    dump_request,
    parse_logs_request,
    parse_metrics_request,
    parse_trace_request,
)
from watchman_collector.records import Batch
from watchman_collector.records import SpanKind as SpanKindRecord

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
    message = ExportTraceServiceRequest()
    json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    return message


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


# -- decode_trace_json: straight to records, equal to the protobuf path ---------------------------


def _via_protobuf(doc: Any) -> Batch | type[OTLPJSONError]:
    """What the protobuf path makes of a document: its batch, or OTLPJSONError if it refuses it."""
    try:
        return decode_traces(parse_trace_request(json.dumps(doc)))
    except OTLPJSONError:
        return OTLPJSONError


def _direct(doc: Any) -> Batch | type[OTLPJSONError]:
    try:
        return decode_trace_json(json.dumps(doc))
    except OTLPJSONError:
        return OTLPJSONError


def _attrs(**values: Any) -> list[dict[str, Any]]:
    """KeyValues from keyword arguments: `server__port=...` is `server.port`."""
    return [{"key": key.replace("__", "."), "value": value} for key, value in values.items()]


S = {"stringValue": "x"}
EDGE_SPANS: list[Any] = [
    *TRICKY_SPANS,
    # ids: zero, padded with whitespace, empty, absent, zero or empty parents, snake_case
    _span(traceId="0" * 32),
    _span(spanId="0" * 16),
    _span(traceId=" " + TRACE_HEX[:30] + " "),
    _span(spanId=SPAN_HEX[:14] + "  "),
    _span(traceId=""),
    _span(parentSpanId="0" * 16),
    _span(parentSpanId=SPAN_HEX[:14] + "  "),
    {k: v for k, v in _span().items() if k != "parentSpanId"},
    {k: v for k, v in _span().items() if k != "traceId"},
    {"trace_id": TRACE_HEX, "span_id": SPAN_HEX, "parent_span_id": PARENT_HEX, "kind": 2},
    _span(parent_span_id=PARENT_HEX, parentSpanId=None),
    _span(start_time_unix_nano="5", startTimeUnixNano=None),
    # kinds, times, status
    _span(kind=7),
    _span(kind=-1),
    _span(kind=True),
    _span(kind="SPAN_KIND_CONSUMER"),
    _span(kind=None, startTimeUnixNano=None),
    _span(startTimeUnixNano="\u0663"),  # an Arabic-Indic digit: int() reads it, so does protobuf
    _span(startTimeUnixNano="\u00b2"),  # a superscript: isdigit() but not a number
    _span(endTimeUnixNano=str(2**64)),
    _span(endTimeUnixNano="+5"),
    _span(endTimeUnixNano=5.0),
    _span(status={"code": "STATUS_CODE_ERROR"}),
    _span(status={"code": 3}),
    _span(status={"code": True}),
    _span(status={"message": "only"}),
    _span(status={}),
    _span(status=[]),
    _span(status=None),
    _span(name=5),
    _span(attributes={}),
    _span(attributes=[]),
    # SERVER: the HTTP status decides failure; error.type only when failed
    _span(status=None, attributes=_attrs(http__response__status_code={"intValue": "503"})),
    _span(status=None, attributes=_attrs(http__response__status_code={"intValue": 404})),
    _span(status=None, attributes=_attrs(http__response__status_code={"stringValue": "502"})),
    _span(status=None, attributes=_attrs(http__response__status_code={"stringValue": "n/a"})),
    _span(status=None, attributes=_attrs(http__response__status_code={"doubleValue": 500.7})),
    _span(status=None, attributes=_attrs(http__response__status_code={"boolValue": True})),
    _span(
        status=None,
        attributes=_attrs(http__response__status_code={}, http__status_code={"intValue": "500"}),
    ),
    _span(status=None, attributes=_attrs(http__status_code={"intValue": "500"}, error__type=S)),
    _span(attributes=_attrs(error__type={"stringValue": "timeout"})),
    _span(status=None, attributes=_attrs(error__type={"stringValue": "timeout"})),
    _span(attributes=[{"key": "error.type"}]),
    _span(attributes=[{"key": "error.type", "value": None}]),
    _span(attributes=[{"value": S}, {"key": "error.type", "value": S}]),
    _span(attributes=[["error.type", S]]),
    _span(attributes=[{"key": "error.type", "value": {"stringValue": "a", "intValue": "1"}}]),
    _span(attributes=[{"key": "error.type", "value": {"stringValue": "a", "future": 1}}]),
    _span(attributes=[{"key": "error.type", "value": {"intValue": "12"}}]),
    _span(attributes=[{"key": "error.type", "value": {"stringValue": ""}}]),
    # CLIENT: callee naming, with every fallback
    _span(kind=3, attributes=_attrs(server__address={"stringValue": "db"}, server__port=S)),
    _span(
        kind=3,
        attributes=_attrs(server__address={"stringValue": ""}, net__peer__name={"intValue": 7}),
    ),
    _span(kind=3, attributes=_attrs(http__host={"stringValue": "api.example:8443"})),
    _span(kind=3, attributes=_attrs(http__host={"stringValue": "[::1"})),
    _span(
        kind=3,
        attributes=_attrs(
            server__port={"intValue": "80"}, url__full={"stringValue": "https://x.test:99/a"}
        ),
    ),
    _span(kind=3, attributes=_attrs(http__url={"stringValue": "http://y.test:99999/"})),
    _span(
        kind=3,
        attributes=_attrs(
            server__port={"stringValue": " 8080 "}, net__peer__port={"intValue": "81"}
        ),
    ),
    _span(kind=3, attributes=_attrs(server__port={"doubleValue": 8080.9})),
    _span(kind=3, attributes=_attrs(server__port={"intValue": "-1"})),
    _span(kind=3, attributes=_attrs(server__port={"intValue": str(2**63)})),
    _span(kind=3, attributes=_attrs(peer__service={"stringValue": "billing"}, error__type=S)),
    _span(kind=3, attributes=_attrs(db__system__name={"stringValue": ""}, db__system=S)),
    _span(kind=3, attributes=_attrs(db__system={"arrayValue": {"values": [S]}})),
    _span(
        kind=3,
        attributes=[
            {"key": "server.address", "value": {"stringValue": "first"}},
            {"key": "server.address", "value": {"stringValue": "last"}},
        ],
    ),
    _span(kind=3, attributes=_attrs(messaging__system=S, http__response__status_code=S)),
    # PRODUCER and CONSUMER: messaging system, links (read for consumers only)
    _span(kind=4, attributes=_attrs(messaging__system={"stringValue": "kafka"}, db__system=S)),
    _span(
        kind=5,
        attributes=_attrs(messaging__system={"stringValue": "kafka"}),
        links=[
            {"traceId": TRACE_HEX, "spanId": SPAN_HEX},
            {"traceId": "", "spanId": SPAN_HEX},
            {"traceId": TRACE_HEX[:30] + "  ", "spanId": SPAN_HEX},
            {"traceId": TRACE_HEX, "spanId": PARENT_HEX, "attributes": [{"key": "a"}]},
        ],
    ),
    _span(kind=5, links=[{"trace_id": TRACE_HEX, "span_id": SPAN_HEX}]),
    _span(kind=5, links=[{"traceId": TRACE_HEX}]),
    _span(kind=5, links=[{"traceId": "zz" * 16, "spanId": SPAN_HEX}]),
    _span(kind=5, links={}),
    # fields decode never reads
    _span(events=[{"name": "exception", "attributes": _attrs(exception__type=S)}], flags=1),
    _span(traceState="k=v", droppedAttributesCount=2),
    "not a span",
    None,
]


@pytest.mark.parametrize("index", range(len(EDGE_SPANS)))
def test_direct_decode_matches_the_protobuf_path(index: int) -> None:
    """Each unusual span decodes to the protobuf path's records, or is refused by both."""
    doc = _request(_span(spanId="00000000000000aa"), EDGE_SPANS[index], _span(kind=3))
    expected = _via_protobuf(doc)
    assert _direct(doc) == expected


UNREAD_BAD_VALUES: list[dict[str, Any]] = [
    {"attributes": [{"key": "url.path", "value": {"intValue": "not a number"}}]},
    {"links": [{"traceId": "zz" * 16, "spanId": SPAN_HEX}]},  # links of a SERVER span
    {"events": [{"timeUnixNano": "soon"}]},
    {"traceState": 5},
]


@pytest.mark.parametrize("index", range(len(UNREAD_BAD_VALUES)))
def test_direct_decode_does_not_validate_what_decode_never_reads(index: int) -> None:
    """A bad value where decode reads nothing is skipped: the span decodes as if it were absent."""
    bad = _request(_span(), _span(**UNREAD_BAD_VALUES[index]))
    assert _via_protobuf(bad) is OTLPJSONError
    assert _direct(bad) == _via_protobuf(_request(_span(), _span()))


RESOURCES: list[Any] = [
    None,
    {},
    {"attributes": []},
    {"attributes": None},
    {"attributes": _attrs(service__name={"stringValue": ""})},
    {"attributes": _attrs(service__name={"intValue": "5"}, service__instance__id=S)},
    {"attributes": _attrs(service__instance__id={"stringValue": "i-1"})},
    {"attributes": [{"key": "service.name"}]},
    {"attributes": [{"key": "service.name", "value": {"stringValue": "a", "boolValue": True}}]},
    {"attributes": [{"key": "service.name", "value": {"stringValue": 5}}]},
    {
        "attributes": [
            {"key": "service.name", "value": {"stringValue": "first"}},
            {"key": "service.name", "value": {"stringValue": "last"}},
        ]
    },
    {"attributes": [{"key": "service.name", "value": {"stringValue": "s", "future": 1}}]},
    [],
    "orders",
]


@pytest.mark.parametrize("index", range(len(RESOURCES)))
def test_direct_decode_reads_resources_like_the_protobuf_path(index: int) -> None:
    """service.name and service.instance.id are read from any resource as decode reads them."""
    doc = _request(_span(), _span(kind=3))
    doc["resourceSpans"][0]["resource"] = RESOURCES[index]
    assert _direct(doc) == _via_protobuf(doc)


def test_direct_decode_matches_on_request_shapes() -> None:
    """Several resources and scopes, snake_case containers and empty ones keep their indices."""
    doc = {
        "resource_spans": [
            {"scope_spans": [{"spans": [_span(spanId="0" * 16)]}, {}, {"spans": None}]},
            _request(_span(), _span(traceId="0" * 32))["resourceSpans"][0],
            {},
        ]
    }
    direct = _direct(doc)
    assert direct == _via_protobuf(doc)
    assert isinstance(direct, Batch)
    assert direct.rejected == 2
    assert direct.reason == "resource_spans[0] span 0: span_id is all zero"
    bad_shapes: list[Any] = [
        {"resourceSpans": {}},
        {"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]},
    ]
    for bad in bad_shapes:
        assert _direct(bad) is OTLPJSONError is _via_protobuf(bad)


def test_direct_decode_errors_name_the_path() -> None:
    """A bad value that decode reads is refused with its JSON path, as parse_trace_request says."""
    spans = [_span(spanId=f"{i:016x}") for i in range(1, 4)] + [_span(traceId=TRACE_HEX[:30])]
    with pytest.raises(OTLPJSONError) as info:
        decode_trace_json(json.dumps(_request(*spans)))
    assert str(info.value) == (
        "resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex characters, got 30"
    )
    with pytest.raises(OTLPJSONError, match=r"^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[1\]: "):
        decode_trace_json(json.dumps(_request(_span(), _span(startTimeUnixNano="soon"))))
    with pytest.raises(OTLPJSONError, match="invalid JSON"):
        decode_trace_json(b'{"resourceSpans": [')


def test_direct_decode_leaves_a_mapping_as_it_was() -> None:
    """Decoding an already-loaded dict, even through the protobuf path, does not change it."""
    doc = _request(_span(), _span(kind="SPAN_KIND_CLIENT"))
    before = json.dumps(doc)
    assert decode_trace_json(doc) == decode_traces(parse_trace_request(before))
    assert json.dumps(doc) == before


@pytest.fixture(scope="module")
def simulated_lines() -> list[str]:
    """OTLP JSON trace lines of a short simulated run with a fault, over every topology."""
    from watchman_collector.sim import Scenario, Simulator, get_topology
    from watchman_collector.sim.faults import Fault, FaultKind

    lines = []
    for name, target in (("shop", "payments"), ("mesh", None), ("large", "pricing")):
        faults = () if target is None else (Fault(target, FaultKind.ERROR, 2.0, 4.0),)
        scenario = Scenario(get_topology(name), seed=7, duration_s=8, rate=8, faults=faults)
        for export in Simulator(scenario).exports():
            if export.signal == "traces":
                lines.append(dump_request(export.request))
    return lines


def test_direct_decode_matches_on_simulated_traffic(
    simulated_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On simulated traffic every span is read directly, with the protobuf path's records."""
    lines = simulated_lines
    expected = [decode_traces(parse_trace_request(line)) for line in lines]
    monkeypatch.setattr(otlp_json, "_read_span_slowly", _fail)
    got = [decode_trace_json(line) for line in lines]
    assert got == expected
    spans = [span for batch in got for span in batch.spans]
    assert len(spans) > 1000
    kinds = {span.kind for span in spans}
    assert {SpanKindRecord.SERVER, SpanKindRecord.CLIENT, SpanKindRecord.CONSUMER} <= kinds
    assert any(span.failed for span in spans)
    assert any(span.links for span in spans)


def _fail(*args: Any) -> Any:
    raise AssertionError(f"a plain span took the protobuf path: {args[1]}")


def test_mutated_documents_decode_directly_as_the_protobuf_path_does(
    simulated_lines: list[str],
) -> None:
    """Whatever the protobuf path accepts the direct path accepts too, with the same records."""
    import random

    base = json.loads(simulated_lines[0])
    replacements: list[Any] = [None, True, -1, 7, 2**70, 1.5, "", "zz", "12", [], [1], {}, {"a": 1}]
    rng = random.Random(3)
    outcomes = set()
    for _ in range(300):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 2)):
            container, key = rng.choice(_nodes(doc))
            container[key] = copy.deepcopy(rng.choice(replacements))
        expected = _via_protobuf(doc)
        got = _direct(doc)  # raises anything but OTLPJSONError: a failure
        if expected is not OTLPJSONError:
            assert got == expected
        outcomes.add((expected is OTLPJSONError, got is OTLPJSONError))
    assert (False, False) in outcomes
    assert (True, True) in outcomes


def test_direct_decode_of_surrogate_escapes() -> None:
    """A lone surrogate escape is refused (OTLPJSONError); an escaped pair is read as usual."""
    lone = json.dumps(_request(_span(name="\ud800")))
    assert "\\ud800" in lone
    with pytest.raises(OTLPJSONError, match="unpaired surrogate"):
        decode_trace_json(lone)
    pair = json.dumps(
        _request(_span(kind=3, attributes=_attrs(peer__service={"stringValue": "😀"})))
    )
    assert "\\ud83d" in pair
    batch = decode_trace_json(pair.encode())
    assert batch == decode_traces(parse_trace_request(pair))
    assert batch.spans[0].peer_service == "😀"


# -- the typed reading (msgspec structs) against the dict reading ------------------------------


def _outcome(doc: Any) -> Batch | str:
    """decode_trace_json's batch, or the text of the OTLPJSONError it raised."""
    try:
        return decode_trace_json(doc if isinstance(doc, str) else json.dumps(doc))
    except OTLPJSONError as exc:
        return f"OTLPJSONError: {exc}"


def test_plain_lines_are_read_as_typed_structs(
    simulated_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporters' lines never reach the dict reading, and read as the protobuf path reads them."""
    expected = [decode_traces(parse_trace_request(line)) for line in simulated_lines]
    monkeypatch.setattr(otlp_json, "_read_span", _fail)
    monkeypatch.setattr(otlp_json, "_load", _fail)
    got = [decode_trace_json(line.encode()) for line in simulated_lines]
    assert got == expected
    assert sum(len(batch.spans) for batch in got) > 1000


def test_typed_reading_gives_the_dict_readings_outcome(
    simulated_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every document gives the same batch or the same error whether the typed reading tries it
    first or not; both its outcomes (read it all, hand it to the dict reading) happen."""
    import random

    docs: list[Any] = [
        _request(_span(spanId="00000000000000aa"), span, _span(kind=3)) for span in EDGE_SPANS
    ]
    for resource in RESOURCES:
        doc = _request(_span(), _span(kind=3))
        doc["resourceSpans"][0]["resource"] = resource
        docs.append(doc)
    docs += [_request(_span(), _span(**bad)) for bad in UNREAD_BAD_VALUES]
    for camel, snake, value in (
        ("parentSpanId", "parent_span_id", PARENT_HEX),
        ("startTimeUnixNano", "start_time_unix_nano", "5"),
        ("endTimeUnixNano", "end_time_unix_nano", "9"),
    ):  # only the snake_case spelling of a field the typed reading declares under both
        span = {k: v for k, v in _span(**{snake: value}).items() if k != camel}
        docs.append(_request(_span(), span))
    docs += [
        _request(_span(kind=5, links=None)),
        _request(_span(kind=5, links=[{"traceId": TRACE_HEX, "spanId": SPAN_HEX}])),
        _request(_span(kind=3, attributes=[{"key": "server.address"}])),
        _request(_span(kind=3, attributes=[{"key": "url.full"}])),
        _request(_span(kind=3, attributes=_attrs(url__full={"stringValue": "http://u.test:81/"}))),
        _request(_span(kind=3, attributes=_attrs(url__full=None, http__url=S))),
    ]
    docs += [
        {"resource_spans": [{"scope_spans": [{"spans": [_span()]}]}]},
        {"resourceSpans": [{"scope_spans": [{"spans": [_span()]}]}]},
        {"resourceSpans": None, "resource_spans": [{"scopeSpans": [{"spans": [_span()]}]}]},
        {"resourceSpans": [{"scopeSpans": None}, {}, {"scopeSpans": [{"spans": None}, {}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": [_span(), "x"]}]}]},
        {"resourceSpans": {}},
        {},
        [],
    ]
    base = json.loads(simulated_lines[0])
    replacements: list[Any] = [None, True, -1, 7, 2**70, 1.5, "", "zz", "12", [], [1], {}, {"a": 1}]
    rng = random.Random(8)
    for _ in range(300):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 2)):
            container, key = rng.choice(_nodes(doc))
            container[key] = copy.deepcopy(rng.choice(replacements))
        docs.append(doc)
    lines = [json.dumps(doc) for doc in docs]
    lines += ['{"resourceSpans": [', "", "[1, 2", '{"resourceSpans": [] } x', "\ufeff{}"]

    read_typed = otlp_json._read_typed
    outcomes: list[str] = []

    def counting(request: Any) -> Batch:
        try:
            batch = read_typed(request)
        except Exception:
            outcomes.append("handed over")
            raise
        outcomes.append("read")
        return batch

    monkeypatch.setattr(otlp_json, "_read_typed", counting)
    first = [_outcome(line) for line in lines]
    assert outcomes.count("read") > 150
    assert outcomes.count("handed over") > 50
    monkeypatch.setattr(otlp_json, "load_trace_request", lambda data: None)
    assert [_outcome(line) for line in lines] == first


def test_a_value_nested_too_deeply_for_the_typed_reading_is_read_as_dicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recursion limit hit while loading a value hands the request to the dict reading."""
    doc = json.dumps(_request(_span(kind=3, attributes=_attrs(peer__service=S))))
    expected = decode_trace_json(doc)

    def too_deep(raw: Any) -> Any:
        raise RecursionError

    monkeypatch.setattr(otlp_json, "_typed_value", too_deep)
    monkeypatch.setattr(otlp_json, "_VALUES", {})
    assert decode_trace_json(doc) == expected
    assert expected.spans[0].peer_service == "x"


def test_long_attribute_values_are_not_remembered() -> None:
    """The typed reading's value memo keeps short values only (as decode's)."""
    from watchman_collector.decode import MEMO_MAX_BYTES

    otlp_json._VALUES.clear()
    spans = [
        _span(spanId=f"{i:016x}", kind=3, attributes=_attrs(peer__service={"stringValue": v}))
        for i, v in enumerate([f"{n:06d}" + "x" * 5000 for n in range(200)] + ["billing"], 1)
    ]
    batch = decode_trace_json(json.dumps(_request(*spans)))
    assert [span.peer_service[:6] for span in batch.spans[:200]] == [f"{n:06d}" for n in range(200)]
    assert batch.spans[200].peer_service == "billing"
    assert {"stringValue": "billing"} in otlp_json._VALUES.values()
    assert max(map(len, otlp_json._VALUES)) <= MEMO_MAX_BYTES < 5000


def test_direct_decode_matches_on_the_fixtures() -> None:
    """Every OTLP JSON test fixture decodes to the protobuf path's records."""
    lines = [
        line
        for path in sorted(TESTDATA.glob("*.json"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert lines
    for line in lines:
        assert decode_trace_json(line) == decode_traces(parse_trace_request(line))


# -- decode_metrics_json: straight to heartbeats ------------------------------------------------


def _metrics_via_protobuf(doc: Any) -> Batch | type[OTLPJSONError]:
    try:
        return decode_metrics(parse_metrics_request(json.dumps(doc)))
    except OTLPJSONError:
        return OTLPJSONError


def _metrics_direct(doc: Any) -> Batch | type[OTLPJSONError]:
    try:
        return decode_metrics_json(json.dumps(doc))
    except OTLPJSONError:
        return OTLPJSONError


def _gauge(name: str, *points: dict[str, Any], kind: str = "gauge") -> dict[str, Any]:
    return {"name": name, kind: {"dataPoints": list(points)}}


def _metrics_request(*metrics: Any, resource: Any = None) -> dict[str, Any]:
    if resource is None:
        resource = {
            "attributes": _attrs(
                service__name={"stringValue": "orders"},
                service__instance__id={"stringValue": "i-1"},
                host__name={"stringValue": "node-1"},
            )
        }
    return {
        "resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": list(metrics)}]}]
    }


BEAT = _gauge("watchman.heartbeat", {"timeUnixNano": "2000", "asDouble": 12.5})
EDGE_METRICS: list[list[Any]] = [
    [BEAT],
    [BEAT, _gauge("process.cpu.utilization", {"timeUnixNano": "1", "asDouble": 0.25})],
    [
        _gauge("process.memory.usage", {"timeUnixNano": "5", "asInt": "100"}, kind="sum"),
        _gauge("process.memory.usage", {"timeUnixNano": "5", "asInt": str(2**60 + 1)}),
        _gauge("process.thread.count", {"timeUnixNano": "9", "asInt": 4}, {"asInt": "7"}),
        _gauge("watchman.inflight_requests", {"timeUnixNano": "3", "asDouble": 2}),
        BEAT,
    ],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asInt": "30"}, {"timeUnixNano": "2"})],
    [_gauge("watchman.heartbeat", {"asDouble": 1.0}, kind="histogram")],
    [{"name": "watchman.heartbeat"}, BEAT],
    [{"name": "watchman.heartbeat", "exponentialHistogram": {}}],
    [{"name": "watchman.heartbeat", "gauge": {"dataPoints": []}, "sum": {}}],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asDouble": "-Infinity"})],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asDouble": 10**400})],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asDouble": "1.5"})],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asDouble": True})],
    [_gauge("watchman.heartbeat", {"time_unix_nano": "1", "as_double": 2.0})],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "1", "asDouble": 1, "asInt": "1"})],
    [_gauge("watchman.heartbeat", {"timeUnixNano": "soon", "asDouble": 1.0})],
    [{"name": "watchman.heartbeat", "gauge": {"data_points": [{"asDouble": 3.0}]}}],
    [{"name": 5}, BEAT],
    [_gauge("process.cpu.utilization", {"timeUnixNano": "1", "asDouble": 1e400}), BEAT],
    [_gauge("http.server.request.duration", {"bad": "unread"}, kind="histogram"), BEAT],
]


@pytest.mark.parametrize("index", range(len(EDGE_METRICS)))
def test_direct_metrics_decode_matches_the_protobuf_path(index: int) -> None:
    """Heartbeats and usage decode to the protobuf path's records, or are refused by both."""
    doc = _metrics_request(*EDGE_METRICS[index])
    assert _metrics_direct(doc) == _metrics_via_protobuf(doc)


@pytest.mark.parametrize("index", range(len(RESOURCES)))
def test_direct_metrics_decode_reads_resources_like_the_protobuf_path(index: int) -> None:
    """A heartbeat's service, instance and host are read from any resource as decode reads them."""
    doc = _metrics_request(BEAT, resource=RESOURCES[index])
    assert _metrics_direct(doc) == _metrics_via_protobuf(doc)


@pytest.fixture(scope="module")
def simulated_metrics_lines() -> list[str]:
    """OTLP JSON metrics lines (heartbeats, usage, HTTP metrics) of a short simulated run."""
    from watchman_collector.sim import Scenario, Simulator, get_topology

    scenario = Scenario(get_topology("shop"), seed=5, duration_s=25, rate=2)
    return [
        dump_request(export.request)
        for export in Simulator(scenario).exports()
        if export.signal == "metrics"
    ]


def test_direct_metrics_decode_on_simulated_traffic(
    simulated_metrics_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated metrics lines are read directly, with the protobuf path's heartbeats."""
    lines = simulated_metrics_lines
    expected = [decode_metrics(parse_metrics_request(line)) for line in lines]
    monkeypatch.setattr(otlp_json, "_decode_metrics_slowly", _fail)
    got = [decode_metrics_json(line) for line in lines]
    assert got == expected
    beats = [beat for batch in got for beat in batch.heartbeats]
    assert beats
    assert all(beat.memory_bytes and beat.cpu_utilization is not None for beat in beats)


def test_direct_metrics_decode_errors_and_surrogates() -> None:
    """Invalid JSON and lone surrogates are OTLPJSONError; a Mapping is left as it was."""
    with pytest.raises(OTLPJSONError, match="invalid JSON"):
        decode_metrics_json(b'{"resourceMetrics": [')
    lone = json.dumps(_metrics_request(BEAT, resource={"attributes": _attrs(host__name=S)}))
    with pytest.raises(OTLPJSONError, match=r"(?i)unpaired surrogate"):
        decode_metrics_json(lone.replace('"x"', '"\\ud800"'))
    doc = _metrics_request(BEAT)
    before = json.dumps(doc)
    assert decode_metrics_json(doc).heartbeats[0].host == "node-1"
    assert json.dumps(doc) == before


def test_mutated_metrics_decode_directly_as_the_protobuf_path_does(
    simulated_metrics_lines: list[str],
) -> None:
    """Whatever metrics request the protobuf path accepts is read directly to the same batch."""
    import random

    base = json.loads(
        next(line for line in simulated_metrics_lines if "watchman.heartbeat" in line)
    )
    replacements: list[Any] = [None, True, -1, 7, 2**70, 1.5, "", "zz", "12", [], [1], {}, {"a": 1}]
    rng = random.Random(4)
    outcomes = set()
    for _ in range(300):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 2)):
            container, key = rng.choice(_nodes(doc))
            container[key] = copy.deepcopy(rng.choice(replacements))
        expected = _metrics_via_protobuf(doc)
        got = _metrics_direct(doc)  # raises anything but OTLPJSONError: a failure
        if expected is not OTLPJSONError:
            assert got == expected
        outcomes.add((expected is OTLPJSONError, got is OTLPJSONError))
    assert (False, False) in outcomes
    assert (True, True) in outcomes
