//! Schema fuzzing with schemathesis (PyPI, installed by `scripts/setup.sh`): it reads
//! `/openapi.json` and sends generated requests, valid and not, to every operation, then
//! chains them (stateful phase). Bounded; the seed is fixed so a failure reproduces. Passes
//! only with zero 5xx and every response matching the documented status codes, content types,
//! headers and body schemas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let server = TestServer::start_with_fixture_catalog(Db::Sqlite).await;
    let spec = server.url("/openapi.json");
    let run = tokio::process::Command::new("st")
        .args([
            "run",
            &spec,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "40",
            "--seed",
            "20261125",
            "--workers",
            "2",
            "--no-color",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its cache and reports go to the test's temp dir, not the repository.
        .current_dir(server.data_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis (`st`) is installed: run scripts/setup.sh");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("No issues found") || report.contains("passed"), "{report}");
    server.stop().await;
}
