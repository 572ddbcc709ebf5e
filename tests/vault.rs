//! The vault with the real binary and real stores: a generated key file, `dynamcp vault rotate`,
//! and a wrong or missing key refusing to start instead of yielding garbage; on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::Db;
use dynamcp::store::SecretKind;
use dynamcp::vault::{Binding, KEY_FILE, KeyringSource, MasterKey, Secret, Vault, kept_key_path};

on_both_backends!(rotation_rewraps_and_a_wrong_key_refuses_to_start);

fn dynamcp(args: &[&str], data_dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamcp"));
    cmd.args(args).env_clear().env("DYNAMCP_DATA_DIR", data_dir).env("DYNAMCP_DEFAULT_CATALOG", "false");
    cmd.env("DYNAMCP_NO_MODEL", "true").env("DYNAMCP_ADDR", "127.0.0.1:0").current_dir(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The keyring `serve` would use with `ENCRYPTION_KEY` = `key` (none: the data dir's key files).
fn keys(key: Option<&Secret>, dir: &std::path::Path) -> KeyringSource {
    KeyringSource::new(key, None, dir).unwrap()
}

async fn rotation_rewraps_and_a_wrong_key_refuses_to_start(db: Db) {
    let (args, dir) = common::test_args(db).await;
    let url = args.store.effective_database_url();
    let db_env: Vec<(&str, &str)> =
        if db == Db::Postgres { vec![("DATABASE_URL", url.as_str())] } else { vec![] };
    let store = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let session = store.create_session("").await.unwrap();

    // First open: no ENCRYPTION_KEY, so a key file is generated; seal one credential with it.
    let vault = Vault::open(store.as_ref(), keys(None, dir.path())).await.unwrap();
    let first_id = vault.key_id().to_owned();
    let binding =
        Binding { session_id: session.id, server: "slack", key: "SLACK_BOT_TOKEN", kind: SecretKind::Env };
    let sealed = vault.seal(binding, b"xoxb-canary").unwrap();
    store.put_credentials(session.id, &[sealed]).await.unwrap();
    let key_file = dir.path().join(KEY_FILE);
    let first_key = std::fs::read_to_string(&key_file).unwrap();

    // Rotate with the real binary: a new key file, the same value behind it.
    let out = dynamcp(&["vault", "rotate"], dir.path(), &db_env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("re-wrapped 1 credential(s); the new key (id "), "{stdout}");
    assert!(!stdout.contains(first_key.trim()));
    let second_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(first_key, second_key);
    let rotated = Vault::open(store.as_ref(), keys(None, dir.path())).await.unwrap();
    assert_ne!(rotated.key_id(), first_id);
    let stored = store.credentials(session.id).await.unwrap();
    assert_eq!(rotated.open_sealed(&stored[0]).unwrap().expose(), b"xoxb-canary");
    // The previous key is kept beside it (for backups made before), until `vault prune`.
    let kept = kept_key_path(dir.path(), &first_id);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), first_key);
    assert!(
        stdout.contains(&format!("the previous key (id {first_id}) stays in {}", kept.display())),
        "{stdout}"
    );
    let out = dynamcp(&["vault", "prune"], dir.path(), &db_env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("removed key {first_id}\n"));
    assert!(!kept.exists());

    // The old key, given as ENCRYPTION_KEY, is refused with a clear error: at open and by `serve`.
    let old = Secret::new(first_key.trim());
    let err = Vault::open(store.as_ref(), keys(Some(&old), dir.path())).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "is not the one that sealed 1 stored credential(s) (key id {})",
            rotated.key_id()
        )),
        "{err}"
    );
    let mut env = db_env.clone();
    env.push(("ENCRYPTION_KEY", first_key.trim()));
    let out = dynamcp(&["serve"], dir.path(), &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not open the credential vault"), "{stderr}");
    assert!(!stderr.contains(first_key.trim()) && !stderr.contains(second_key.trim()), "a key was printed");

    // A malformed key, and a missing key file with sealed data, are refused too.
    env.pop();
    env.push(("ENCRYPTION_KEY", "too-short"));
    let out = dynamcp(&["serve"], dir.path(), &env);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENCRYPTION_KEY must be 32 bytes"));
    std::fs::remove_file(&key_file).unwrap();
    let err = Vault::open(store.as_ref(), keys(None, dir.path())).await.unwrap_err().to_string();
    assert!(err.contains("is missing but stored credentials need it"), "{err}");
    assert!(!key_file.exists(), "no new key may replace a lost one while data needs the old");

    // Rotating to a key given in NEW_ENCRYPTION_KEY works from ENCRYPTION_KEY as well.
    let next = MasterKey::generate().to_base64();
    let mut env = db_env.clone();
    env.push(("ENCRYPTION_KEY", second_key.trim()));
    env.push(("NEW_ENCRYPTION_KEY", next.expose()));
    let out = dynamcp(&["vault", "rotate"], dir.path(), &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let final_vault = Vault::open(store.as_ref(), keys(Some(&next), dir.path())).await.unwrap();
    let stored = store.credentials(session.id).await.unwrap();
    assert_eq!(final_vault.open_sealed(&stored[0]).unwrap().expose(), b"xoxb-canary");
    store.close().await;
}
