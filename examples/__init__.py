"""Small instrumented services that call each other: the demo's shop and the SDK's end-to-end tests.

Each runs as ``python -m examples.<service> --port N --downstream name=URL``; see README.md.
"""

__all__: list[str] = []
