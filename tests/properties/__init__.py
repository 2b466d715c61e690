"""Property-based tests (hypothesis): generated inputs checked against documented rules.

Under CI (``CI`` set) the examples are derandomized, so a run is repeatable and a failure is
the code's, not the draw's; run locally for fresh examples each time, or with
``--hypothesis-seed=N`` to replay one. No deadline: these machines are shared and noisy.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("local", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")
