"""The distribution's version, read by the build and by the SDK's resource."""

__version__ = "0.1.0"
