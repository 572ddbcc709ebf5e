//! Writers that keep a service busy with acknowledged writes (chats that need credentials, then
//! the credentials), and the check that every acknowledged write is still there afterwards:
//! for `kill -9` tests, of one service or of one replica among several.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Credential values sent: (server id, key, value).
pub type Sent = Vec<(String, String, String)>;

/// What a service acknowledged: a session with its first message, and, once credentials were
/// accepted, the agent and the values it was sent.
#[derive(Debug, Clone)]
pub struct Acked {
    pub session: String,
    pub message: String,
    pub agent: Option<(String, Sent)>,
}

/// One writer (`tag` makes its messages and values unique): chats that need credentials, then
/// sends them, until the service at `base` stops answering or `stop` is set.
pub async fn write_until(base: String, tag: usize, acked: Arc<Mutex<Vec<Acked>>>, stop: Arc<AtomicBool>) {
    let http = super::http_client();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let message = format!("post a message to our slack channel (writer {tag}, turn {i})");
        let Ok(resp) = http.post(format!("{base}/api/chat")).json(&json!({"message": message})).send().await
        else {
            return;
        };
        let Ok(body) = resp.json::<Value>().await else { return };
        let session = body["session_id"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_owned();
        acked.lock().unwrap().push(Acked { session: session.clone(), message, agent: None });
        let (credentials, sent) = super::answer_credentials(&body, |key| format!("value-{tag}-{i}-{key}"));
        let request = json!({"message": "", "session_id": session, "credentials": credentials});
        let Ok(resp) = http.post(format!("{base}/api/chat")).json(&request).send().await else { return };
        let Ok(body) = resp.json::<Value>().await else { return };
        if let Some(agent) = body["agent_id"].as_str() {
            let mut acked = acked.lock().unwrap();
            if let Some(last) = acked.iter_mut().rev().find(|a| a.session == session) {
                last.agent = Some((agent.to_owned(), sent));
            }
        }
    }
}

/// Every acknowledged write, read back through the service at `base`: each session with its
/// first message and the answer to it, each agent with credentials that decrypt to exactly what
/// was sent.
pub async fn assert_kept(base: &str, acked: &[Acked]) {
    let http = super::http_client();
    for a in acked {
        let resp = http.get(format!("{base}/api/sessions/{}", a.session)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "session {} lost", a.session);
        let session: Value = resp.json().await.unwrap();
        assert_eq!(session["messages"][0]["message"], a.message.as_str());
        assert_eq!(session["messages"][1]["role"], "assistant");
        let Some((agent, sent)) = &a.agent else { continue };
        let url = format!("{base}/api/agents/{agent}/config?format=cursor&include_secrets=true");
        let resp = http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "agent {agent} lost");
        let config: Value = resp.json().await.unwrap();
        for (server_id, key, value) in sent {
            let got = &config["mcpServers"][server_id]["env"][key];
            assert_eq!(got, value.as_str(), "credential {server_id}/{key} of agent {agent}: {config}");
        }
    }
}
