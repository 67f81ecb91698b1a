"""cookieguard: a sidecar reverse proxy that keeps users signed in."""

__version__ = "0.1.0"

__all__ = ["__version__"]
