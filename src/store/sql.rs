//! The SQL both backends share. sqlx's SQLite driver accepts PostgreSQL's `$N` placeholders and
//! both map the same Rust types (UUID, JSON, timestamps), so one body serves both: `impl_store!`
//! instantiates it per backend, and this file holds the row types and conversions it uses.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Agent, CredentialNames, Message, Session, StoreError};

/// Now, at the precision both backends store (microseconds), so a value written and read back
/// compares equal.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Turns a foreign-key violation into a typed "parent is gone" error.
pub(super) fn parent_missing(err: sqlx::Error, parent: &'static str) -> StoreError {
    match err.as_database_error().map(|e| e.kind()) {
        Some(sqlx::error::ErrorKind::ForeignKeyViolation) => StoreError::MissingParent(parent),
        _ => StoreError::Database(err),
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: Uuid,
    tenant: String,
    status: String,
    context: Json<Value>,
    required_credentials: Json<Value>,
    collected_credentials: Json<CredentialNames>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id,
            tenant: r.tenant,
            status: r.status,
            context: r.context.0,
            required_credentials: r.required_credentials.0,
            collected_credentials: r.collected_credentials.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    session_id: Uuid,
    agent_id: Option<Uuid>,
    role: String,
    message: String,
    timestamp: DateTime<Utc>,
    metadata: Json<Value>,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;

    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        Ok(Message {
            id: r.id,
            session_id: r.session_id,
            agent_id: r.agent_id,
            role: r.role.parse()?,
            message: r.message,
            timestamp: r.timestamp,
            metadata: r.metadata.0,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AgentRow {
    id: Uuid,
    tenant: String,
    session_id: Uuid,
    name: String,
    mcp_config: Json<Value>,
    workflow: String,
    model: Option<String>,
    status: String,
    metadata: Json<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Agent {
            id: r.id,
            tenant: r.tenant,
            session_id: r.session_id,
            name: r.name,
            mcp_config: r.mcp_config.0,
            workflow: r.workflow,
            model: r.model,
            status: r.status,
            metadata: r.metadata.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

// Column lists as macros so the queries stay `&'static str` (sqlx only takes audited dynamic SQL).
macro_rules! session_columns {
    () => {
        "id, tenant, status, context, required_credentials, collected_credentials, created_at, updated_at"
    };
}
macro_rules! agent_columns {
    () => {
        "id, tenant, session_id, name, mcp_config, workflow, model, status, metadata, created_at, updated_at"
    };
}
macro_rules! message_columns {
    () => {
        "id, session_id, agent_id, role, message, timestamp, metadata"
    };
}
pub(super) use {agent_columns, message_columns, session_columns};

/// Implements [`Store`](super::Store) for a backend struct with a `pool` field (reads) and a
/// `writer` field (every write: one connection on SQLite, so writers queue in the process instead
/// of sleeping in SQLite's busy handler; the same pool on PostgreSQL).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr) => {
        /// The statements several writes share, on one connection (or transaction).
        impl $store {
            async fn insert_session(
                conn: &mut <$db as sqlx::Database>::Connection,
                session: &$crate::store::Session,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO sessions (",
                    $crate::store::sql::session_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(session.id)
                .bind(&session.tenant)
                .bind(&session.status)
                .bind(sqlx::types::Json(&session.context))
                .bind(sqlx::types::Json(&session.required_credentials))
                .bind(sqlx::types::Json(&session.collected_credentials))
                .bind(session.created_at)
                .bind(session.updated_at)
                .execute(conn)
                .await?;
                Ok(())
            }

            async fn insert_agent(
                conn: &mut <$db as sqlx::Database>::Connection,
                agent: &$crate::store::Agent,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::sql::*;
                sqlx::query(concat!(
                    "INSERT INTO agents (",
                    $crate::store::sql::agent_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(agent.id)
                .bind(&agent.tenant)
                .bind(agent.session_id)
                .bind(&agent.name)
                .bind(sqlx::types::Json(&agent.mcp_config))
                .bind(&agent.workflow)
                .bind(&agent.model)
                .bind(&agent.status)
                .bind(sqlx::types::Json(&agent.metadata))
                .bind(agent.created_at)
                .bind(agent.updated_at)
                .execute(conn)
                .await
                .map_err(|e| parent_missing(e, "session"))?;
                Ok(())
            }

            async fn write_state(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: uuid::Uuid,
                state: &$crate::store::SessionState,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let done = sqlx::query(
                    "UPDATE sessions SET status = $2, context = $3, required_credentials = $4, \
                     updated_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(&state.status)
                .bind(sqlx::types::Json(&state.context))
                .bind(sqlx::types::Json(&state.required_credentials))
                .bind(now())
                .execute(conn)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            /// Adds one to the counter fact `name` ([`BUMP_COUNTER`](super::leases::BUMP_COUNTER)),
            /// inside the caller's transaction. On PostgreSQL the change is announced too
            /// ([`CHANGES_CHANNEL`](super::leases::CHANGES_CHANNEL)), on commit.
            async fn bump_counter(
                conn: &mut <$db as sqlx::Database>::Connection,
                name: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::leases::BUMP_COUNTER)
                    .bind(name)
                    .bind(chrono::Utc::now())
                    .execute(&mut *conn)
                    .await?;
                if $backend == $crate::store::Backend::Postgres {
                    sqlx::query($crate::store::leases::ANNOUNCE_CHANGE).bind(name).execute(conn).await?;
                }
                Ok(())
            }

            /// Runs `statement` (a DELETE of row `$1` that takes agents with it) and, when it
            /// deleted anything, counts that in the same transaction (`AGENT_DELETIONS_FACT`), so
            /// the other services on the database stop what they run for those agents.
            async fn delete_counting_agents(
                pool: &sqlx::Pool<$db>,
                statement: &'static str,
                id: uuid::Uuid,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = pool.begin().await?;
                let deleted = sqlx::query(statement).bind(id).execute(&mut *tx).await?.rows_affected() > 0;
                if deleted {
                    Self::bump_counter(&mut tx, $crate::store::leases::AGENT_DELETIONS_FACT).await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn insert_messages(
                conn: &mut <$db as sqlx::Database>::Connection,
                session_id: uuid::Uuid,
                messages: &[$crate::store::NewMessage],
            ) -> Result<Vec<$crate::store::Message>, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let stored: Vec<$crate::store::Message> = messages
                    .iter()
                    .map(|m| $crate::store::Message {
                        id: uuid::Uuid::new_v4(),
                        session_id,
                        agent_id: m.agent_id,
                        role: m.role,
                        message: m.message.clone(),
                        timestamp: now(),
                        metadata: m.metadata.clone(),
                    })
                    .collect();
                // Two rows per statement (a chat turn writes a question and its answer): one
                // round trip to the database instead of two, in the order given.
                for pair in stored.chunks(2) {
                    let query = match pair.len() {
                        2 => sqlx::query(concat!(
                            "INSERT INTO conversations (",
                            $crate::store::sql::message_columns!(),
                            ") VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"
                        )),
                        _ => sqlx::query(concat!(
                            "INSERT INTO conversations (",
                            $crate::store::sql::message_columns!(),
                            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                        )),
                    };
                    let mut query = query;
                    for message in pair {
                        query = query
                            .bind(message.id)
                            .bind(message.session_id)
                            .bind(message.agent_id)
                            .bind(message.role.as_str())
                            .bind(&message.message)
                            .bind(message.timestamp)
                            .bind(sqlx::types::Json(&message.metadata));
                    }
                    query.execute(&mut *conn).await.map_err(|e| parent_missing(e, "session or agent"))?;
                }
                Ok(stored)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> $crate::store::Backend {
                $backend
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_session(
                &self,
                tenant: &str,
            ) -> Result<$crate::store::Session, $crate::store::StoreError> {
                let session = $crate::store::Session::new(tenant);
                let mut conn = self.writer.acquire().await?;
                Self::insert_session(&mut conn, &session).await?;
                Ok(session)
            }

            async fn get_session(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::store::Session>, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::session_columns!(),
                    " FROM sessions WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn delete_session(&self, id: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                // Its agents go with it (a cascade): counted as deletions of agents.
                Self::delete_counting_agents(&self.writer, "DELETE FROM sessions WHERE id = $1", id).await
            }

            async fn append_messages(
                &self,
                session_id: uuid::Uuid,
                messages: &[$crate::store::NewMessage],
            ) -> Result<Vec<$crate::store::Message>, $crate::store::StoreError> {
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                let stored = Self::insert_messages(&mut tx, session_id, messages).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn messages(
                &self,
                session_id: uuid::Uuid,
            ) -> Result<Vec<$crate::store::Message>, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let rows: Vec<MessageRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::message_columns!(),
                    " FROM conversations WHERE session_id = $1 ORDER BY seq"
                ))
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn create_agent(
                &self,
                agent: &$crate::store::NewAgent,
            ) -> Result<$crate::store::Agent, $crate::store::StoreError> {
                let created = $crate::store::Agent::new(agent);
                let mut conn = self.writer.acquire().await?;
                Self::insert_agent(&mut conn, &created).await?;
                Ok(created)
            }

            async fn save_turn(
                &self,
                turn: &$crate::store::TurnWrite<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                match turn.new_session {
                    // A new session is inserted with its state already in place.
                    Some(session) => {
                        let session = $crate::store::Session {
                            status: turn.state.status.clone(),
                            context: turn.state.context.clone(),
                            required_credentials: turn.state.required_credentials.clone(),
                            ..session.clone()
                        };
                        Self::insert_session(&mut tx, &session).await?;
                        if let Some(agent) = turn.agent {
                            Self::insert_agent(&mut tx, agent).await?;
                        }
                    }
                    None => {
                        if let Some(agent) = turn.agent {
                            Self::insert_agent(&mut tx, agent).await?;
                        }
                        if !Self::write_state(&mut tx, turn.session_id, turn.state).await? {
                            // Dropping the transaction rolls back whatever it wrote.
                            return Ok(false);
                        }
                    }
                }
                Self::insert_messages(&mut tx, turn.session_id, turn.messages).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn get_agent(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::store::Agent>, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let row: Option<AgentRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::agent_columns!(),
                    " FROM agents WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_agents(
                &self,
                tenant: &str,
                page: $crate::store::Page,
            ) -> Result<(Vec<$crate::store::Agent>, u64), $crate::store::StoreError> {
                use $crate::store::sql::*;
                let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
                let rows: Vec<AgentRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::agent_columns!(),
                    " FROM agents WHERE tenant = $3 ORDER BY created_at DESC, id LIMIT $1 OFFSET $2"
                ))
                .bind(i64::from(page.limit))
                .bind(offset)
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
                let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM agents WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((rows.into_iter().map(Into::into).collect(), u64::try_from(total).unwrap_or(0)))
            }

            async fn delete_agent(&self, id: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                Self::delete_counting_agents(&self.writer, "DELETE FROM agents WHERE id = $1", id).await
            }

            async fn set_agent_metadata(
                &self,
                id: uuid::Uuid,
                metadata: &serde_json::Value,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let done = sqlx::query("UPDATE agents SET metadata = $1, updated_at = $2 WHERE id = $3")
                    .bind(sqlx::types::Json(metadata))
                    .bind(now())
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn create_api_key(
                &self,
                tenant: &str,
                key_hash: &str,
                label: &str,
            ) -> Result<$crate::store::ApiKey, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let key = $crate::store::ApiKey {
                    id: uuid::Uuid::new_v4(),
                    tenant: tenant.to_owned(),
                    label: label.to_owned(),
                    created_at: now(),
                    revoked_at: None,
                };
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant, key_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(key.id)
                .bind(&key.tenant)
                .bind(key_hash)
                .bind(&key.label)
                .bind(key.created_at)
                .execute(&self.writer)
                .await?;
                Ok(key)
            }

            async fn api_key_tenant(&self, key_hash: &str) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT tenant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                        .bind(key_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(t,)| t))
            }

            async fn active_api_keys(&self) -> Result<u64, $crate::store::StoreError> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn created_api_keys(&self) -> Result<u64, $crate::store::StoreError> {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM api_keys").fetch_one(&self.pool).await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn list_api_keys(&self) -> Result<Vec<$crate::store::ApiKey>, $crate::store::StoreError> {
                let rows: Vec<(
                    uuid::Uuid,
                    String,
                    String,
                    chrono::DateTime<chrono::Utc>,
                    Option<chrono::DateTime<chrono::Utc>>,
                )> = sqlx::query_as(
                    "SELECT id, tenant, label, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, tenant, label, created_at, revoked_at)| $crate::store::ApiKey {
                        id,
                        tenant,
                        label,
                        created_at,
                        revoked_at,
                    })
                    .collect())
            }

            async fn revoke_api_key(&self, id: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::sql::*;
                let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(now())
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn close(&self) {
                self.writer.close().await;
                self.pool.close().await;
            }
        }
    };
}

pub(super) use impl_store;

/// Statements slower than this are logged as warnings. Reading the whole catalog's vectors at
/// start takes a few seconds on a cold disk and is not worth a warning (sqlx's default is 1 s).
pub(super) const SLOW_STATEMENT: std::time::Duration = std::time::Duration::from_secs(10);
