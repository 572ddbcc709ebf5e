//! The design's own test suite (`tests/design/test_api.py`, verbatim) and its example calls
//! (`tests/design/test_examples.py`), run with pytest against the real `dynamcp` binary started as
//! a new user would: a fresh data directory, the compiled-in catalog, the offline planner, no key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[tokio::test]
async fn the_designs_tests_pass_against_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::clean_command();
    cmd.arg("serve").env("DYNAMCP_ADDR", "127.0.0.1:0").env("DYNAMCP_DATA_DIR", dir.path());
    let server = common::spawn_serve(cmd);
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/design");
    let run = tokio::process::Command::new("python3")
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"])
        .arg(&tests)
        .env("DYNAMCP_DESIGN_URL", &server.base)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("pytest finishes within 5 minutes")
        .expect("pytest is installed: run scripts/setup.sh");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the design's tests failed:\n{report}");
    // `-rA` lists each passed test: the design's three must be among them (none skipped).
    for test in ["test_root", "test_chat_endpoint", "test_session_creation"] {
        let passed = format!("test_api.py::{test}");
        assert!(
            report.lines().any(|l| l.starts_with("PASSED") && l.ends_with(&passed)),
            "{test} did not pass:\n{report}"
        );
    }
    println!("{report}");
    server.stop();
}
