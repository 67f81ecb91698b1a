"""How many examples the core properties get: 10,000 in CI, 200 locally (see conftest.py)."""

import os

from hypothesis import settings

CORE_EXAMPLES = 10_000 if (os.environ.get("CI") or os.environ.get("HYPOTHESIS_PROFILE") == "ci") else 200
core_property = settings(max_examples=CORE_EXAMPLES, deadline=None)
