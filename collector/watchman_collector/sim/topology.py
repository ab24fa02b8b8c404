"""Microservice topologies for the simulator, as plain data: services, their endpoints and calls.

A topology says who calls whom, how (timeouts, retries, optional calls, fan-out), and how long the
work takes; the simulator turns it into traffic. Names follow Kubernetes habits: the OpenTelemetry
`service.name` ("orders") is not the DNS name callers dial ("orders-api.shop.svc.cluster.local"),
and a pod's `host.name` is its generated pod name, so the analyzer must map addresses to services
from paired spans, as it must in real clusters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "TOPOLOGIES",
    "Database",
    "Downstream",
    "Endpoint",
    "External",
    "Service",
    "Topic",
    "Topology",
    "get_topology",
]


@dataclass(frozen=True, slots=True)
class Downstream:
    """One call an endpoint makes: to a service endpoint, a database, an external API or a topic.

    `operation` is the endpoint key ("GET /products/{id}") for services and external APIs, the
    database operation ("SELECT products", "GET", "find reviews") for databases, and is ignored
    for topics (publishing is always `send`). An `optional` call's failure does not fail the
    caller; `retries` are resends after a failure; `fanout` is an inclusive range of how many
    times the call is made per request (`parallel` ones at once, otherwise one after another);
    `probability` is the chance the call happens at all.
    """

    target: str
    operation: str = ""
    timeout_s: float = 2.0
    retries: int = 0
    optional: bool = False
    fanout: tuple[int, int] = (1, 1)
    parallel: bool = False
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An HTTP route a service serves: its own work (median seconds) and its downstream calls.

    `client_error_ratio` is the share of requests answered 4xx (the caller's fault, e.g. 404),
    which a CLIENT span marks as an error and a SERVER span does not.
    """

    method: str
    route: str
    work_s: float
    calls: tuple[Downstream, ...] = ()
    client_error_ratio: float = 0.0

    @property
    def key(self) -> str:
        """The endpoint's name as callers and span names use it: "METHOD /route"."""
        return f"{self.method} {self.route}"


@dataclass(frozen=True, slots=True)
class Service:
    """An instrumented service: reports spans and heartbeats through the SDK.

    `dns` is the host name callers use (server.address); `gateway` services answer 502/504 for
    upstream failures and timeouts where others answer 500. `http_client` is the instrumented
    client library ("httpx" or "requests"; it decides `error.type` of connection failures);
    `legacy_semconv` makes the service's HTTP client spans use the pre-1.23 attribute names
    (`http.method`, `http.url`, `net.peer.name`, `http.status_code`), as older instrumentations
    still do. `export_delay_s` is the SDK's batch span processor schedule delay.
    """

    name: str
    endpoints: tuple[Endpoint, ...]
    dns: str
    port: int = 8080
    instances: int = 2
    version: str = "1.0.0"
    gateway: bool = False
    http_client: str = "httpx"
    legacy_semconv: bool = False
    export_delay_s: float = 5.0
    threads: int = 8
    memory_mb: int = 160

    def endpoint(self, key: str) -> Endpoint:
        """The endpoint named "METHOD /route"; KeyError when the service has none."""
        for ep in self.endpoints:
            if ep.key == key:
                return ep
        raise KeyError(f"{self.name} has no endpoint {key!r}")


@dataclass(frozen=True, slots=True)
class Database:
    """A database reached by CLIENT spans only (no SDK inside).

    `legacy_semconv` emits `db.system` / `db.name` / `db.operation` / `net.peer.name` instead of
    the stable `db.system.name` / `db.namespace` / `db.operation.name` / `server.address`.
    """

    name: str
    system: str
    host: str
    port: int
    namespace: str
    latency_s: float = 0.002
    legacy_semconv: bool = False


@dataclass(frozen=True, slots=True)
class External:
    """An HTTP API outside the cluster: CLIENT spans to it have no SERVER span."""

    name: str  # the host name, which is also how the analyzer names the virtual node
    port: int = 443
    latency_s: float = 0.08
    error_ratio: float = 0.002


@dataclass(frozen=True, slots=True)
class Topic:
    """A message topic: PRODUCER spans at the sender, CONSUMER spans at `consumer` later."""

    name: str
    consumer: str  # service name
    handler: str  # endpoint key on the consumer whose work and calls process one message
    system: str = "kafka"
    host: str = "kafka.messaging.svc.cluster.local"
    port: int = 9092
    lag_s: float = 0.02
    consumer_group: str = ""


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole system: its parts and the traffic mix entering it (service, endpoint, weight)."""

    name: str
    namespace: str
    services: tuple[Service, ...]
    databases: tuple[Database, ...] = ()
    externals: tuple[External, ...] = ()
    topics: tuple[Topic, ...] = ()
    entrypoints: tuple[tuple[str, str, float], ...] = ()
    _index: dict[str, Service | Database | External | Topic] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        """Index the parts by name and check that every call and entry point resolves."""
        index = self._index
        parts: list[Service | Database | External | Topic] = [
            *self.services,
            *self.databases,
            *self.externals,
            *self.topics,
        ]
        for part in parts:
            if part.name in index:
                raise ValueError(f"topology {self.name}: duplicate name {part.name!r}")
            index[part.name] = part
        for svc in self.services:
            for ep in svc.endpoints:
                for call in ep.calls:
                    target = index.get(call.target)
                    if target is None:
                        raise ValueError(f"{svc.name} {ep.key}: unknown target {call.target!r}")
                    if isinstance(target, Service):
                        target.endpoint(call.operation)
        for topic in self.topics:
            consumer = index.get(topic.consumer)
            if not isinstance(consumer, Service):
                raise ValueError(f"topic {topic.name}: consumer {topic.consumer!r} is no service")
            consumer.endpoint(topic.handler)
        for name, key, _weight in self.entrypoints:
            self.service(name).endpoint(key)

    def part(self, name: str) -> Service | Database | External | Topic:
        """Any part by name; KeyError when unknown."""
        return self._index[name]

    def service(self, name: str) -> Service:
        """The service named `name`; KeyError when it is not a service."""
        part = self._index.get(name)
        if not isinstance(part, Service):
            raise KeyError(f"topology {self.name} has no service {name!r}")
        return part

    @property
    def fault_targets(self) -> tuple[str, ...]:
        """Names a fault may hit: services and databases."""
        return tuple(s.name for s in self.services) + tuple(d.name for d in self.databases)


def _call(target: str, operation: str = "", **kwargs: object) -> Downstream:
    return Downstream(target, operation, **kwargs)  # type: ignore[arg-type]


def _ep(key: str, work_ms: float, *calls: Downstream, client_errors: float = 0.0) -> Endpoint:
    method, route = key.split(" ", 1)
    return Endpoint(method, route, work_ms / 1000, tuple(calls), client_errors)


def _dns(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def shop() -> Topology:
    """Six services and one PostgreSQL database, the classic web-shop demo shape."""
    ns = "shop"
    db = "store"
    services = (
        Service(
            "gateway",
            (
                _ep("GET /api/products", 2, _call("products", "GET /products", timeout_s=1.5)),
                _ep(
                    "GET /api/products/{id}",
                    2,
                    _call("products", "GET /products/{id}", timeout_s=1.0, retries=1),
                    _call("customers", "GET /customers/{id}", timeout_s=0.5, optional=True),
                ),
                _ep("POST /api/orders", 3, _call("orders", "POST /orders", timeout_s=4.0)),
                _ep("GET /api/orders/{id}", 2, _call("orders", "GET /orders/{id}", timeout_s=1.5)),
            ),
            dns="gateway.shop.svc.cluster.local",
            port=80,
            gateway=True,
            instances=2,
            export_delay_s=2.0,
        ),
        Service(
            "orders",
            (
                _ep(
                    "POST /orders",
                    6,
                    _call("customers", "GET /customers/{id}", timeout_s=0.8, retries=2),
                    _call("products", "GET /products/{id}", timeout_s=0.8, fanout=(1, 4)),
                    _call("payments", "POST /payments", timeout_s=2.5),
                    _call(db, "INSERT orders"),
                    _call("notifications", "POST /notifications", timeout_s=0.5, optional=True),
                ),
                _ep("GET /orders/{id}", 2, _call(db, "SELECT orders"), client_errors=0.01),
            ),
            dns="orders-api.shop.svc.cluster.local",
            version="2.3.1",
        ),
        Service(
            "products",
            (
                _ep("GET /products", 4, _call(db, "SELECT products")),
                _ep("GET /products/{id}", 2, _call(db, "SELECT products"), client_errors=0.02),
            ),
            dns="catalog.shop.svc.cluster.local",
            instances=3,
            version="1.8.0",
        ),
        Service(
            "customers",
            (_ep("GET /customers/{id}", 2, _call(db, "SELECT customers")),),
            dns=_dns("customers", ns),
            version="1.2.4",
            http_client="requests",
        ),
        Service(
            "payments",
            (
                _ep(
                    "POST /payments",
                    5,
                    _call(db, "INSERT payments"),
                    _call("api.psp.example.com", "POST /v1/charges", timeout_s=2.0, retries=1),
                ),
            ),
            dns="payments-svc.shop.svc.cluster.local",
            version="3.0.2",
            export_delay_s=1.0,
        ),
        Service(
            "notifications",
            (_ep("POST /notifications", 8),),
            dns=_dns("notifications", ns),
            instances=1,
            version="0.9.1",
            http_client="requests",
        ),
    )
    return Topology(
        name="shop",
        namespace=ns,
        services=services,
        databases=(
            Database(db, "postgresql", "postgres.shop.svc.cluster.local", 5432, "shop", 0.0015),
        ),
        externals=(External("api.psp.example.com", latency_s=0.12),),
        entrypoints=(
            ("gateway", "GET /api/products", 45),
            ("gateway", "GET /api/products/{id}", 30),
            ("gateway", "POST /api/orders", 12),
            ("gateway", "GET /api/orders/{id}", 13),
        ),
    )


def mesh() -> Topology:
    """Twelve services, PostgreSQL, Redis and a legacy-instrumented MySQL, one Kafka topic."""
    ns = "mesh"
    carrier = "api.carrier.example.org"
    services = (
        Service(
            "web",
            (
                _ep(
                    "GET /",
                    3,
                    _call("auth", "GET /session", timeout_s=0.3, retries=1),
                    _call("catalog", "GET /items", timeout_s=1.0),
                    _call("recommendations", "GET /recs", timeout_s=0.4, optional=True),
                ),
                _ep(
                    "GET /item/{id}",
                    3,
                    _call("auth", "GET /session", timeout_s=0.3, retries=1),
                    _call("catalog", "GET /items/{id}", timeout_s=0.8, retries=1),
                    _call("pricing", "GET /prices/{sku}", timeout_s=0.5),
                    _call("inventory", "GET /stock/{sku}", timeout_s=0.5, optional=True),
                    _call("recommendations", "GET /recs", timeout_s=0.4, optional=True),
                ),
                _ep(
                    "GET /search",
                    2,
                    _call("auth", "GET /session", timeout_s=0.3, retries=1),
                    _call("search", "GET /query", timeout_s=1.5),
                ),
                _ep(
                    "POST /cart",
                    2,
                    _call("auth", "GET /session", timeout_s=0.3, retries=1),
                    _call("cart", "POST /cart/items", timeout_s=1.0),
                ),
                _ep(
                    "POST /checkout",
                    4,
                    _call("auth", "GET /session", timeout_s=0.3, retries=1),
                    _call("checkout", "POST /checkout", timeout_s=6.0),
                ),
            ),
            dns="web-frontend.mesh.svc.cluster.local",
            port=80,
            gateway=True,
            instances=3,
            export_delay_s=1.0,
        ),
        Service(
            "auth",
            (_ep("GET /session", 1, _call("sessions", "GET")),),
            dns="auth-server.mesh.svc.cluster.local",
            instances=2,
        ),
        Service(
            "catalog",
            (
                _ep("GET /items", 4, _call("catalog-db", "SELECT items")),
                _ep("GET /items/{id}", 2, _call("catalog-db", "SELECT items"), client_errors=0.01),
            ),
            dns=_dns("catalog", ns),
            instances=3,
        ),
        Service(
            "search",
            (
                _ep(
                    "GET /query",
                    15,
                    _call(
                        "catalog", "GET /items/{id}", timeout_s=0.5, fanout=(2, 6), parallel=True
                    ),
                    _call("pricing", "GET /prices/{sku}", timeout_s=0.5, optional=True),
                ),
            ),
            dns="search-api.mesh.svc.cluster.local",
            http_client="requests",
        ),
        Service(
            "recommendations",
            (
                _ep(
                    "GET /recs",
                    12,
                    _call(
                        "catalog", "GET /items/{id}", timeout_s=0.3, fanout=(1, 3), parallel=True
                    ),
                ),
            ),
            dns="recs.mesh.svc.cluster.local",
            legacy_semconv=True,
            http_client="requests",
        ),
        Service(
            "cart",
            (
                _ep(
                    "POST /cart/items",
                    2,
                    _call("sessions", "SET"),
                    _call("pricing", "GET /prices/{sku}", timeout_s=0.5, retries=1),
                ),
                _ep("GET /cart", 1, _call("sessions", "GET")),
            ),
            dns=_dns("cart", ns),
        ),
        Service(
            "checkout",
            (
                _ep(
                    "POST /checkout",
                    6,
                    _call("cart", "GET /cart", timeout_s=0.5, retries=1),
                    _call("pricing", "GET /prices/{sku}", timeout_s=0.5, fanout=(1, 5)),
                    _call("inventory", "POST /reservations", timeout_s=1.0, retries=1),
                    _call("payments", "POST /charges", timeout_s=3.0),
                    _call("shipping", "POST /quotes", timeout_s=1.0, optional=True),
                    _call("order-events", probability=1.0),
                ),
            ),
            dns="checkout-svc.mesh.svc.cluster.local",
            export_delay_s=2.0,
        ),
        Service(
            "pricing",
            (_ep("GET /prices/{sku}", 1, _call("sessions", "GET", probability=0.5)),),
            dns=_dns("pricing", ns),
            instances=2,
        ),
        Service(
            "inventory",
            (
                _ep("GET /stock/{sku}", 2, _call("inventory-db", "SELECT stock")),
                _ep("POST /reservations", 3, _call("inventory-db", "UPDATE stock")),
            ),
            dns="stock.mesh.svc.cluster.local",
        ),
        Service(
            "payments",
            (
                _ep(
                    "POST /charges",
                    4,
                    _call("catalog-db", "INSERT charges"),
                    _call("api.bank.example.net", "POST /authorize", timeout_s=2.5),
                ),
            ),
            dns="payments-gw.mesh.svc.cluster.local",
            export_delay_s=1.0,
        ),
        Service(
            "shipping",
            (
                _ep(
                    "POST /quotes",
                    8,
                    _call("api.carrier.example.org", "POST /rates", timeout_s=0.8),
                ),
            ),
            dns=_dns("shipping", ns),
            instances=1,
        ),
        Service(
            "email",
            (_ep("POST /order-confirmation", 20, _call("smtp-relay.example.com", "POST /send")),),
            dns=_dns("email", ns),
            instances=1,
            http_client="requests",
        ),
    )
    return Topology(
        name="mesh",
        namespace=ns,
        services=services,
        databases=(
            Database("catalog-db", "postgresql", "pg-main.mesh.svc.cluster.local", 5432, "catalog"),
            Database("sessions", "redis", "redis-master.mesh.svc.cluster.local", 6379, "0", 0.0004),
            Database(
                "inventory-db",
                "mysql",
                "mysql.mesh.svc.cluster.local",
                3306,
                "inventory",
                0.003,
                legacy_semconv=True,
            ),
        ),
        externals=(
            External("api.bank.example.net", latency_s=0.2),
            External(carrier, latency_s=0.15),
            External("smtp-relay.example.com", latency_s=0.05),
        ),
        topics=(
            Topic("order-events", "email", "POST /order-confirmation", consumer_group="email"),
        ),
        entrypoints=(
            ("web", "GET /", 35),
            ("web", "GET /item/{id}", 30),
            ("web", "GET /search", 15),
            ("web", "POST /cart", 12),
            ("web", "POST /checkout", 8),
        ),
    )


def _leaf(name: str, ns: str, work_ms: float, *calls: Downstream, **kwargs: object) -> Service:
    """A service with one `GET /v1/{name}` endpoint, the common shape of the large topology."""
    return Service(
        name,
        (_ep(f"GET /v1/{name}", work_ms, *calls),),
        dns=kwargs.pop("dns", None) or f"{name}-svc.{ns}.svc.cluster.local",  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _v1(name: str, **kwargs: object) -> Downstream:
    return _call(name, f"GET /v1/{name}", **kwargs)


def large() -> Topology:
    """Thirty-four services in four tiers, five databases, six external APIs, two Kafka topics."""
    ns = "prod"
    t = _v1
    services = (
        Service(
            "edge-gateway",
            (
                _ep(
                    "GET /home",
                    2,
                    t("identity", timeout_s=0.3, retries=1),
                    t("storefront", timeout_s=2.0),
                    t("ads", timeout_s=0.2, optional=True),
                ),
                _ep(
                    "GET /product/{id}",
                    2,
                    t("identity", timeout_s=0.3, retries=1),
                    t("product-page", timeout_s=2.0),
                ),
                _ep(
                    "POST /order",
                    3,
                    t("identity", timeout_s=0.3, retries=1),
                    _call("order-api", "POST /v1/orders", timeout_s=8.0),
                ),
                _ep(
                    "GET /account",
                    2,
                    t("identity", timeout_s=0.3, retries=1),
                    t("account-page", timeout_s=2.0),
                ),
            ),
            dns="edge.prod.svc.cluster.local",
            port=80,
            gateway=True,
            instances=4,
            export_delay_s=1.0,
        ),
        Service(
            "mobile-bff",
            (
                _ep(
                    "GET /m/feed",
                    3,
                    t("identity", timeout_s=0.3, retries=1),
                    t("storefront", timeout_s=2.0),
                    t("notifications-inbox", timeout_s=0.3, optional=True),
                ),
            ),
            dns="bff-mobile.prod.svc.cluster.local",
            gateway=True,
            instances=2,
        ),
        _leaf("ads", ns, 3, _call("cache", "GET"), instances=1),
        _leaf("identity", ns, 1, t("token-cache", timeout_s=0.1), instances=3),
        _leaf("token-cache", ns, 0.5, _call("cache", "GET"), http_client="requests"),
        _leaf(
            "storefront",
            ns,
            4,
            t("catalog", timeout_s=0.8, retries=1),
            t("recommendation", timeout_s=0.4, optional=True),
            t("promotions", timeout_s=0.3, optional=True),
            t("pricing", timeout_s=0.5, fanout=(2, 8), parallel=True),
            instances=3,
        ),
        _leaf(
            "product-page",
            ns,
            3,
            t("catalog", timeout_s=0.8, retries=1),
            t("pricing", timeout_s=0.5),
            t("stock", timeout_s=0.5, optional=True),
            t("reviews", timeout_s=0.5, optional=True),
            t("recommendation", timeout_s=0.4, optional=True),
            t("media", timeout_s=0.3, optional=True),
            instances=3,
        ),
        _leaf(
            "account-page",
            ns,
            3,
            t("profile", timeout_s=0.5),
            t("order-history", timeout_s=1.0),
            t("loyalty", timeout_s=0.3, optional=True),
        ),
        _leaf("catalog", ns, 2, _call("catalog-db", "SELECT products"), instances=3),
        _leaf(
            "recommendation",
            ns,
            10,
            t("catalog", timeout_s=0.3, fanout=(1, 4), parallel=True),
            t("ml-features", timeout_s=0.2),
            legacy_semconv=True,
            http_client="requests",
        ),
        _leaf("ml-features", ns, 3, _call("cache", "MGET")),
        _leaf(
            "promotions", ns, 2, t("pricing", timeout_s=0.3), _call("catalog-db", "SELECT promos")
        ),
        _leaf(
            "pricing",
            ns,
            1,
            t("currency", timeout_s=0.2, probability=0.3),
            _call("cache", "GET"),
            instances=4,
        ),
        _leaf("currency", ns, 1, _call("fx.example.com", "GET /rates", timeout_s=0.5)),
        _leaf("stock", ns, 2, _call("inventory-db", "SELECT stock")),
        _leaf("reviews", ns, 3, _call("content-db", "find reviews")),
        _leaf("media", ns, 1, _call("cdn-origin.example.com", "GET /meta")),
        _leaf("profile", ns, 2, _call("accounts-db", "SELECT users")),
        _leaf("order-history", ns, 4, _call("accounts-db", "SELECT orders")),
        _leaf("loyalty", ns, 2, t("profile", timeout_s=0.3), http_client="requests"),
        _leaf("notifications-inbox", ns, 1, _call("content-db", "find inbox")),
        Service(
            "order-api",
            (
                _ep(
                    "POST /v1/orders",
                    5,
                    t("profile", timeout_s=0.5, retries=1),
                    t("cart", timeout_s=0.5, retries=1),
                    t("pricing", timeout_s=0.5, fanout=(1, 5)),
                    t("fraud", timeout_s=1.5),
                    t("stock-reservation", timeout_s=1.0, retries=1),
                    t("payment", timeout_s=4.0),
                    _call("accounts-db", "INSERT orders"),
                    _call("orders-topic"),
                ),
            ),
            dns="order-api.prod.svc.cluster.local",
            instances=3,
            export_delay_s=2.0,
        ),
        _leaf("cart", ns, 1, _call("cache", "HGETALL")),
        _leaf("fraud", ns, 8, t("ml-features", timeout_s=0.2), t("risk-rules", timeout_s=0.3)),
        _leaf("risk-rules", ns, 2, _call("content-db", "find rules")),
        _leaf(
            "stock-reservation",
            ns,
            3,
            _call("inventory-db", "UPDATE stock"),
            t("warehouse", timeout_s=0.5, optional=True),
        ),
        _leaf("warehouse", ns, 4, _call("inventory-db", "SELECT bins"), instances=1),
        _leaf(
            "payment",
            ns,
            4,
            t("payment-router", timeout_s=3.0),
            _call("accounts-db", "INSERT payments"),
            instances=3,
            export_delay_s=1.0,
        ),
        _leaf(
            "payment-router",
            ns,
            2,
            _call("acquirer-a.example.net", "POST /auth", timeout_s=2.0, retries=1),
            _call("acquirer-b.example.net", "POST /auth", timeout_s=2.0, probability=0.2),
        ),
        Service(
            "fulfillment",
            (
                _ep(
                    "POST /v1/fulfillment",
                    6,
                    t("warehouse", timeout_s=0.5, retries=2),
                    t("shipping-quotes", timeout_s=1.0),
                    _call("inventory-db", "UPDATE stock"),
                    _call("shipments-topic"),
                ),
            ),
            dns="fulfillment.prod.svc.cluster.local",
        ),
        _leaf(
            "shipping-quotes",
            ns,
            5,
            _call("carrier.example.org", "POST /quote", timeout_s=0.8, retries=1),
        ),
        Service(
            "mailer",
            (_ep("POST /v1/mail", 15, _call("smtp.example.com", "POST /send", timeout_s=2.0)),),
            dns="mailer.prod.svc.cluster.local",
            instances=1,
            http_client="requests",
        ),
        Service(
            "analytics-sink",
            (_ep("POST /v1/events", 2, _call("content-db", "insert events")),),
            dns="analytics.prod.svc.cluster.local",
            instances=1,
        ),
        _leaf("audit", ns, 1, _call("content-db", "insert audit"), instances=1),
    )
    return Topology(
        name="large",
        namespace=ns,
        services=services,
        databases=(
            Database(
                "catalog-db", "postgresql", "pg-catalog.prod.svc.cluster.local", 5432, "catalog"
            ),
            Database(
                "accounts-db", "postgresql", "pg-accounts.prod.svc.cluster.local", 5432, "acct"
            ),
            Database(
                "inventory-db", "mysql", "mysql-inv.prod.svc.cluster.local", 3306, "inv", 0.003
            ),
            Database("content-db", "mongodb", "mongo.prod.svc.cluster.local", 27017, "content"),
            Database("cache", "redis", "redis.prod.svc.cluster.local", 6379, "0", 0.0003),
        ),
        externals=(
            External("fx.example.com", latency_s=0.09),
            External("cdn-origin.example.com", latency_s=0.03),
            External("acquirer-a.example.net", latency_s=0.25),
            External("acquirer-b.example.net", latency_s=0.3),
            External("carrier.example.org", latency_s=0.2),
            External("smtp.example.com", latency_s=0.05),
        ),
        topics=(
            Topic("orders-topic", "fulfillment", "POST /v1/fulfillment", consumer_group="fulfil"),
            Topic("shipments-topic", "mailer", "POST /v1/mail", consumer_group="mailer"),
        ),
        entrypoints=(
            ("edge-gateway", "GET /home", 30),
            ("edge-gateway", "GET /product/{id}", 30),
            ("edge-gateway", "POST /order", 6),
            ("edge-gateway", "GET /account", 9),
            ("mobile-bff", "GET /m/feed", 20),
            ("analytics-sink", "POST /v1/events", 3),
            ("audit", "GET /v1/audit", 2),
        ),
    )


TOPOLOGIES: dict[str, Callable[[], Topology]] = {"shop": shop, "mesh": mesh, "large": large}


def get_topology(name: str) -> Topology:
    """A fresh copy of the named topology; KeyError naming the known ones otherwise."""
    factory = TOPOLOGIES.get(name)
    if factory is None:
        raise KeyError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
    return factory()
