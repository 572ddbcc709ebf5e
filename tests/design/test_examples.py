"""The design's example calls (its implementation guide, "Phase 4: Usage Examples"), sent as written
to the running dynamcp and checked against the response the design documents. Ours, not the
design's: `test_api.py` is the design's own suite."""

from fastapi.testclient import TestClient
from app.main import app

client = TestClient(app)

REQUEST = (
    "I want to create a workflow that monitors my Gmail for invoices, extracts the data, "
    "and saves it to a Google Sheet"
)


def initial_request():
    response = client.post("/api/chat", json={"message": REQUEST})
    assert response.status_code == 200, response.text
    return response.json()


def test_initial_request_answers_with_the_designs_fields():
    body = initial_request()
    for field in ("reply", "session_id", "required_credentials", "status", "agent_created"):
        assert field in body, field
    assert body["status"] in ("pending_credentials", "success")
    assert isinstance(body["agent_created"], bool)
    assert body["agent_created"] == (body["status"] == "success")
    assert body["required_credentials"], "Gmail and Google Sheets need credentials"
    for item in body["required_credentials"]:
        for field in ("mcp_server", "credential_key", "description", "instructions"):
            assert isinstance(item[field], str) and item[field], (field, item)


def test_providing_credentials_creates_the_agent():
    body = initial_request()
    credentials = {}
    for item in body["required_credentials"]:
        credentials.setdefault(item["mcp_server"], {})[item["credential_key"]] = "example-value-1234"
    response = client.post("/api/chat", json={
        "message": "Here are my credentials",
        "session_id": body["session_id"],
        "credentials": credentials,
    })
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["session_id"] == body["session_id"]
    assert done["required_credentials"] == []
    assert (done["status"], done["agent_created"]) == ("success", True)
    agent = client.get("/api/agents/" + done["agent_id"])
    assert agent.status_code == 200
    assert "example-value-1234" not in agent.text, "values are never echoed"


def test_the_designs_literal_credentials_get_a_clear_4xx():
    # The design's example names servers and keys of its own catalog ("Gmail",
    # GMAIL_CREDENTIALS_PATH): dynamcp's plan has others, so it says which, and stores nothing.
    body = initial_request()
    response = client.post("/api/chat", json={
        "message": "Here are my credentials",
        "session_id": body["session_id"],
        "credentials": {
            "Gmail": {"GMAIL_CREDENTIALS_PATH": "/path/to/gmail-creds.json"},
            "Google Sheets": {"SHEETS_CREDENTIALS_PATH": "/path/to/sheets-creds.json"},
        },
    })
    assert response.status_code == 422
    error = response.json()
    assert error["error"]["code"] == "unknown_credential_server"
    assert error["detail"] == error["error"]["message"]
    assert "expected one of" in error["detail"]
    assert "/path/to/gmail-creds.json" not in response.text
    session = client.get("/api/sessions/" + body["session_id"]).json()
    assert "GMAIL_CREDENTIALS_PATH" not in str(session)
