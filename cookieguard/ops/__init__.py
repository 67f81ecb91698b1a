"""Operator tools beside the proxy: `explain`, `healthcheck` and the `demo`."""
