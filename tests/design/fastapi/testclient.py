"""A stand-in for FastAPI's TestClient: the design's tests make the same calls, and they go over
real HTTP to the dynamcp binary whose base URL `app` is, instead of into a Python app."""

import requests


class TestClient(requests.Session):
    __test__ = False  # not a test class, whatever its name

    def __init__(self, app: str):
        super().__init__()
        self.base_url = app.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        return super().request(method, self.base_url + url, *args, timeout=60, **kwargs)
