"""Where the design's tests import their `app` from: here, the base URL of a running dynamcp
(`DYNAMCP_DESIGN_URL`, set by tests/design_contract.rs)."""

import os

app = os.environ["DYNAMCP_DESIGN_URL"]
