import pytest
from fastapi.testclient import TestClient
from app.main import app

client = TestClient(app)

def test_root():
    response = client.get("/")
    assert response.status_code == 200
    assert response.json()["message"] == "Dynamic MCP Agent API"

def test_chat_endpoint():
    response = client.post("/api/chat", json={
        "message": "I want to monitor Gmail and send Slack notifications"
    })
    assert response.status_code == 200
    assert "session_id" in response.json()

def test_session_creation():
    response = client.post("/api/sessions/create")
    assert response.status_code == 200
    assert "id" in response.json()
