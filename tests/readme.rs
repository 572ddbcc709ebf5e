//! README.md runs as written: every `sh` block, in order, in one working directory, against a fresh
//! `dynamcp serve` (the real binary; a local fake of an OpenAI-compatible model for the run
//! example, the offline planner for chats). Each output is checked against the shape the README
//! shows under its command: every key it names, every literal value it gives (`"status":"success"`),
//! every SSE event; and no command may answer an error the README does not show.
//!
//! What a block may assume, as a reader following the README would have: `dynamcp` on `PATH`, the
//! checkout's `eval/` folder, a file of their own where the README names one (`sa.json`, a Google
//! service-account key), and the files the README shows as ` ```json <name> ` blocks. Only the
//! service's address differs (`127.0.0.1:8000` → the test's port). Two commands are not run here:
//! `scripts/run.sh` (builds and starts the service this test starts itself) and `scripts/test.sh`
//! (it is the test suite; CI runs it as written).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::fake_llm::{self, Step};
use dynamcp::llm::Provider;
use serde_json::Value;

/// The blocks a test cannot run, and why: see the module's documentation.
const NOT_RUN: [&str; 2] = ["scripts/run.sh", "scripts/test.sh"];

/// Commands not run here, each with its reason (the line is replaced by `:` and reported).
const NOT_RUN_LINES: [(&str, &str); 1] = [(
    "dynamcp eval eval/plans2.jsonl --plans --verify",
    "installs and starts every server the blind set's 163 plans choose: about an hour",
)];

/// One fenced block of the README: the line of its opening fence, its info string, its lines.
struct Block {
    line: usize,
    info: String,
    lines: Vec<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(info), None) => {
                open = Some(Block { line: i + 1, info: info.trim().to_owned(), lines: Vec::new() })
            }
            (Some(_), Some(block)) => out.push(block),
            (None, Some(mut block)) => {
                block.lines.push(line.to_owned());
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    out
}

/// A piece of a block to run: its commands (and the comments before them), from `line`, and the
/// output the README shows under the last command (comment lines right after it).
struct Piece {
    line: usize,
    code: String,
    shown: Vec<String>,
}

fn pieces(block: &Block) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut code = String::new();
    let mut shown = Vec::new();
    let mut start = block.line + 1;
    let mut after_command = false;
    for (i, line) in block.lines.iter().enumerate() {
        let comment = line.trim_start().strip_prefix('#');
        match comment {
            Some(text) if after_command || !shown.is_empty() => shown.push(text.trim().to_owned()),
            _ => {
                if !shown.is_empty() {
                    out.push(Piece {
                        line: start,
                        code: std::mem::take(&mut code),
                        shown: std::mem::take(&mut shown),
                    });
                    start = block.line + 1 + i;
                }
                code.push_str(line);
                code.push('\n');
                after_command = comment.is_none() && !line.trim().is_empty();
            }
        }
    }
    if !code.trim().is_empty() || !shown.is_empty() {
        out.push(Piece { line: start, code, shown });
    }
    out
}

/// What `shown` (the README's comment lines under a command) requires of `output`, as a list of
/// problems: keys and literal values of JSON shown, SSE event names, the first word of plain text.
fn mismatches(shown: &[String], output: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let text = shown.join(" ");
    let compact: String = output.split_whitespace().collect::<Vec<_>>().join(" ");
    let pairs = regex_lite_pairs(&text);
    for (key, value) in pairs {
        if !output.contains(&format!("\"{key}\":")) {
            problems.push(format!("no \"{key}\" in the output"));
        } else if let Some(value) = value
            && !output.contains(&format!("\"{key}\":{value}"))
        {
            problems.push(format!("\"{key}\" is not {value}"));
        }
    }
    for line in shown {
        if let Some(event) = line.strip_prefix("event: ") {
            if !output.lines().any(|l| l == format!("event: {event}")) {
                problems.push(format!("no `{event}` event"));
            }
        } else if !line.starts_with('{')
            && !line.starts_with('"')
            && !line.starts_with("data: ")
            && !line.contains('…')
            && !line.is_empty()
            && let Some(word) = line.split_whitespace().next()
            && !compact.contains(word)
        {
            problems.push(format!("`{word}` is not in the output"));
        }
    }
    if !text.contains("\"error\"") && output.contains("\"error\":{\"code\":") {
        problems.push("an error the README does not show".to_owned());
    }
    problems
}

/// The `"key":` of JSON text, each with its value when the text gives a literal one (a string
/// without `…`, a number, `true`, `false`, `null`).
fn regex_lite_pairs(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(q) = text[i..].find('"') {
        let start = i + q + 1;
        let Some(len) = text[start..].find('"') else { break };
        let end = start + len;
        let key = &text[start..end];
        let rest = &text[end + 1..];
        let is_key = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && rest.starts_with(':')
            && (start < 2 || bytes[start - 2] != b'\\');
        if !is_key {
            i = end + 1;
            continue;
        }
        let value = &rest[1..];
        let literal = if let Some(v) = value.strip_prefix('"') {
            v.find('"').map(|e| &v[..e]).filter(|v| !v.contains('…')).map(|v| format!("\"{v}\""))
        } else {
            let token: String =
                value.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
            let literal = matches!(token.as_str(), "true" | "false" | "null") || token.parse::<f64>().is_ok();
            literal.then_some(token)
        };
        out.push((key.to_owned(), literal));
        i = end + 1;
    }
    out
}

#[tokio::test]
async fn every_readme_command_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let all = blocks(&readme);

    // A model for the run example: it asks for the time in Tokyo, then answers.
    let (fake, url) = fake_llm::start_fake(vec![
        Step::With(Box::new(|body: &Value| {
            let tools = fake_llm::offered_tools(Provider::Openai, body);
            let tool =
                tools.iter().find(|t| t.contains("get_current_time")).expect("the time tool is offered");
            fake_llm::tool_turn(
                Provider::Openai,
                &[("c1", tool, serde_json::json!({"timezone": "Asia/Tokyo"}))],
            )
        })),
        Step::Reply(fake_llm::text_turn(Provider::Openai, "It is evening in Tokyo.")),
    ])
    .await;

    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dynamcp"), bin.path().join("dynamcp")).unwrap();
    std::os::unix::fs::symlink(root.join("eval"), work.path().join("eval")).unwrap();
    std::fs::write(
        work.path().join("sa.json"),
        r#"{"type": "service_account", "project_id": "example", "client_email": "agent@example.iam.gserviceaccount.com"}"#,
    )
    .unwrap();
    for block in &all {
        if let Some(name) = block.info.strip_prefix("json ") {
            std::fs::write(work.path().join(name.trim()), block.lines.join("\n")).unwrap();
        }
    }
    let env = [
        ("DYNAMCP_DATA_DIR", data.path().to_str().unwrap().to_owned()),
        ("DYNAMCP_MODEL_DIR", root.join("models/all-MiniLM-L6-v2").to_str().unwrap().to_owned()),
        ("DYNAMCP_PLANNER", "offline".to_owned()),
        ("DYNAMCP_LLM_PROVIDER", "openai".to_owned()),
        ("DYNAMCP_LLM_BASE_URL", format!("{url}/v1")),
        ("DYNAMCP_LLM_MODEL", "fake-model".to_owned()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
    ];
    // The reader's own environment (certificates, proxies), as their shell has it.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dynamcp"));
    cmd.env("DYNAMCP_VERIFY_SERVERS", "false");
    cmd.arg("serve").env("DYNAMCP_ADDR", "127.0.0.1:0").current_dir(work.path());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let server = common::spawn_serve(cmd);
    let address = server.base.trim_start_matches("http://").to_owned();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());

    let mut ran = 0;
    for block in all.iter().filter(|b| b.info == "sh") {
        let text = block.lines.join("\n");
        if NOT_RUN.contains(&text.trim()) {
            continue;
        }
        // One script per block (its variables carry from command to command), with a marker after
        // each piece to cut the output.
        let pieces = pieces(block);
        let mut script = String::from("set -euo pipefail\n");
        for (n, piece) in pieces.iter().enumerate() {
            let mut code = piece.code.replace("127.0.0.1:8000", &address).replace("localhost:8000", &address);
            for (line, why) in NOT_RUN_LINES {
                if let Some(at) = code.find(line) {
                    let end = code[at..].find('\n').map_or(code.len(), |e| at + e);
                    println!("README.md: not run here ({why}): {}", &code[at..end]);
                    code.replace_range(at..end, ":");
                }
            }
            script.push_str(&code);
            script.push_str(&format!("\nprintf '\\n@@readme-piece {n}\\n'\n"));
        }
        let mut run = tokio::process::Command::new("bash");
        // `dynamcp doctor` checks that serve's port is free: a free one here (8000 may be taken
        // on a shared machine; the service the examples talk to is the test's).
        run.arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .env("PATH", &path)
            .env("DYNAMCP_ADDR", "127.0.0.1:0")
            .kill_on_drop(true);
        for (k, v) in &env {
            run.env(k, v);
        }
        let output = tokio::time::timeout(std::time::Duration::from_secs(900), run.output())
            .await
            .unwrap_or_else(|_| panic!("the block at README.md:{} took over 15 minutes", block.line))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let mut outputs: Vec<&str> = stdout.split("@@readme-piece ").collect();
        let first = outputs.remove(0);
        let done = outputs.len();
        if !output.status.success() || done < pieces.len() {
            let failed = &pieces[done.min(pieces.len() - 1)];
            panic!(
                "README.md:{}: this failed ({}):\n{}\noutput:\n{}\nstderr:\n{stderr}",
                failed.line,
                output.status,
                failed.code,
                outputs.last().copied().unwrap_or(first)
            );
        }
        // The output of piece n is what came before its marker.
        let mut before = first;
        for (piece, after) in pieces.iter().zip(outputs) {
            let problems = mismatches(&piece.shown, before);
            assert!(
                problems.is_empty(),
                "README.md:{}: the output does not have the shape shown ({}):\n{}\noutput:\n{before}",
                piece.line,
                problems.join("; "),
                piece.code
            );
            before = after.split_once('\n').map_or("", |(_, rest)| rest);
            ran += 1;
        }
    }
    assert!(ran >= 15, "only {ran} pieces ran");
    assert_eq!(fake.seen.lock().unwrap().len(), 2, "the run example asked the model twice");
    claude_desktop_config_starts_dynamcp(&all, data.path(), &root.join("models/all-MiniLM-L6-v2"));
    server.stop();
}

/// The README's Claude Desktop config for dynamcp itself, with its placeholder paths filled in,
/// launched as an MCP client launches it (its command, args and env): the Python MCP SDK
/// initializes, lists the tools and searches over stdio. On the data dir the sh blocks used.
fn claude_desktop_config_starts_dynamcp(all: &[Block], data: &Path, models: &Path) {
    let block = all
        .iter()
        .find(|b| b.info == "json" && b.lines.join("\n").contains("\"mcpServers\""))
        .expect("the README shows a Claude Desktop config for dynamcp");
    let text = block
        .lines
        .join("\n")
        .replace("/path/to/dynamcp/models/all-MiniLM-L6-v2", models.to_str().unwrap())
        .replace("/path/to/dynamcp/data", data.to_str().unwrap())
        .replace("/path/to/dynamcp", env!("CARGO_BIN_EXE_dynamcp"));
    let config: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("README.md:{}: not JSON ({e}):\n{text}", block.line));
    let server = &config["mcpServers"]["dynamcp"];
    let command = server["command"].as_str().expect("a command");
    let args: Vec<&str> = server["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_client.py");
    let mut client = std::process::Command::new("python3");
    client.arg(script).arg("stdio").arg(command).args(&args).env("MCP_FLOW", "search");
    for (key, value) in server["env"].as_object().unwrap() {
        client.env(key, value.as_str().unwrap());
    }
    let output = client.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README.md:{}: the config does not start dynamcp over MCP:\n{}\n{stdout}",
        block.line,
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["server"], "dynamcp");
    assert!(out["tools"].as_array().unwrap().iter().any(|t| t["name"] == "search_servers"), "{out}");
    assert_eq!(out["search"]["isError"], false, "{out}");
    let results = out["search"]["structured"]["results"].as_array().unwrap();
    assert!(
        results.iter().any(|r| r["id"].as_str().is_some_and(|id| id.contains("time"))),
        "the search finds a time server: {out}"
    );
}

#[test]
fn output_shapes_are_checked() {
    let shown = vec![r#"{"status":"success","agent_created":true,"agent_id":"…"}"#.to_owned()];
    assert!(mismatches(&shown, r#"{"status":"success","agent_created":true,"agent_id":"x"}"#).is_empty());
    assert_eq!(
        mismatches(&shown, r#"{"status":"pending_credentials","agent_created":false}"#),
        ["\"status\" is not \"success\"", "\"agent_created\" is not true", "no \"agent_id\" in the output"]
    );
    let error = r#"{"error":{"code":"not_found","message":"x"},"detail":"x"}"#;
    assert_eq!(mismatches(&[], error), ["an error the README does not show"]);
    let events = vec!["event: done".to_owned(), "204".to_owned()];
    assert_eq!(
        mismatches(&events, "event: server_starting\n"),
        ["no `done` event", "`204` is not in the output"]
    );
}
