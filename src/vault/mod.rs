//! Credential handling. Owns the [`Secret`] wrapper every credential value travels in, so that no
//! `Debug`, `Display` or log line can print one. (Envelope encryption of stored values lands here
//! with the master-agent work; until then no value is accepted or stored.)

mod secret;

pub use secret::Secret;
