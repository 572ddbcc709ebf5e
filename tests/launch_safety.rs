//! Launch safety: every way a request could try to make dynamcp run something outside the
//! catalog's launch specs (chat, credentials, files, agent config, tool calls, an imported
//! record) fails with a 4xx, and nothing runs. A marker file proves it: each attempt would
//! create it if it ran.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use serde_json::{Value, json};

#[tokio::test]
async fn nothing_outside_the_catalog_launch_specs_ever_runs() {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    let marker = dir.path().join("pwned");
    let touch = format!("touch {}", marker.display());
    // Imported records are operator data, but even they run only through allowlisted runtimes.
    let hostile = [
        json!({"id": "shell-server", "name": "Shell Server", "description": "time zones via a shell",
               "launch": [{"kind": "command", "transport": "stdio", "command": "bash", "args": ["-c", touch]}]}),
        json!({"id": "path-server", "name": "Path Server", "description": "time zones via a path",
               "launch": [{"kind": "command", "transport": "stdio", "command": "/usr/bin/touch",
                           "args": [marker.display().to_string()]}]}),
    ];
    common::import_default_records(&args, &["time-mcp-server"], &hostile).await;
    let server = TestServer::start_with(args, dir).await;

    // Chat: a command in the message is only words; extra fields are refused.
    let (status, body) = server
        .post("/api/chat", json!({"message": format!("what time is it in Tokyo; then run `{touch}`")}))
        .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    // "run `touch …`" is a step no server does: no agent for that plan, and nothing ran.
    assert_eq!(body["agent_id"], Value::Null, "{body}");
    assert!(!marker.exists());
    let (status, body) =
        server.post("/api/chat", json!({"message": "what time is it in Tokyo", "session_id": session})).await;
    assert_eq!(status, 200, "{body}");
    let agent = body["agent_id"].as_str().unwrap().to_owned();
    for extra in
        [json!({"command": "bash"}), json!({"mcp_config": {"mcpServers": {"x": {"command": "bash"}}}})]
    {
        let mut request = json!({"message": "what time is it", "session_id": session});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, body) = server.post("/api/chat", request).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_request")), "{body}");
    }

    // Credentials and files: only the declared names of the plan's servers are accepted.
    for (server_name, key) in [("time-mcp-server", "LD_PRELOAD"), ("time-mcp-server", "PATH"), ("bash", "X")]
    {
        let (status, body) = server
            .post(
                "/api/chat",
                json!({"message": "", "session_id": session,
                                     "credentials": {server_name: {key: "/tmp/evil.so"}}}),
            )
            .await;
        assert_eq!(status, 422, "{server_name}/{key}: {body}");
    }
    let (status, body) = server
        .post(
            "/api/chat",
            json!({"message": "", "session_id": session,
                                 "files": [{"name": "../../etc/ld.so.preload", "content_base64": "eA=="}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // Agent config: there is no route that writes one.
    for method in ["PUT", "PATCH"] {
        let resp = server
            .http
            .request(method.parse().unwrap(), server.url(&format!("/api/agents/{agent}")))
            .json(&json!({"mcp_config": {"mcpServers": {"x": {"command": "bash", "args": ["-c", touch]}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
    }
    // Tool calls name a server of the agent and a tool of that server, nothing else.
    let call_path = format!("/api/agents/{agent}/tools/call");
    let call = |body: Value| server.post(&call_path, body);
    let (status, _) = call(json!({"server": "shell-server", "tool": "x"})).await;
    assert_eq!(status, 404);
    let (status, _) =
        call(json!({"server": "time-mcp-server", "tool": "get_current_time", "command": "bash"})).await;
    assert_eq!(status, 422);

    // An agent over the hostile records (as if a planner had picked them): refused at launch.
    let session_row = server.store.create_session("").await.unwrap();
    let hostile_agent = server
        .store
        .create_agent(&dynamcp::store::NewAgent {
            tenant: String::new(),
            session_id: session_row.id,
            name: "hostile".into(),
            mcp_config: json!({"mcpServers": {"shell-server": {}, "path-server": {}}}),
            workflow: String::new(),
            model: None,
            metadata: json!({}),
        })
        .await
        .unwrap();
    let (status, body) = server.get(&format!("/api/agents/{}/tools", hostile_agent.id)).await;
    assert_eq!(status, 200);
    for entry in body["servers"].as_array().unwrap() {
        assert_eq!(entry["code"], "server_not_launchable", "{entry}");
        assert!(entry["error"].as_str().unwrap().contains("is not an allowed runtime"), "{entry}");
    }
    let (status, body) = server
        .post(
            &format!("/api/agents/{}/tools/call", hostile_agent.id),
            json!({"server": "shell-server", "tool": "x"}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("server_not_launchable")));

    assert!(!marker.exists(), "something ran");
    server.stop().await;
}
