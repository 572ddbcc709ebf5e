"""The stand-ins next to this file (`app.main`, `fastapi.testclient`) come before anything installed."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
