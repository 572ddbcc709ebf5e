"""Only `fastapi.testclient` is provided here, for the design's tests (see README.md)."""
