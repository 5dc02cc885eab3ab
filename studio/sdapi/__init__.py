"""AUTOMATIC1111-compatible HTTP API (see routes.py)."""

from studio.sdapi.routes import sdapi_routes

__all__ = ["sdapi_routes"]
