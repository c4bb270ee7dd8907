//! Vendor organisations.

use portcullis_core::{OrgName, Timestamp};
use sqlx::{AnyConnection, Row};

use crate::{AuditActor, Store, StoreError};

impl Store {
    pub async fn add_org(&self, by: &AuditActor, name: &OrgName) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if find_org_id(tx.conn(), name).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "organisation '{name}' already exists"
            )));
        }
        let now = tx.now();
        sqlx::query("INSERT INTO orgs (name, created_at) VALUES ($1, $2)")
            .bind(name.as_str().to_owned())
            .bind(now.to_rfc3339())
            .execute(tx.conn())
            .await?;
        tx.audit(&by.draft("org.add").target(format!("org:{name}")))
            .await?;
        tx.commit().await
    }

    pub async fn list_orgs(&self) -> Result<Vec<(OrgName, Timestamp)>, StoreError> {
        let rows = sqlx::query("SELECT name, created_at FROM orgs ORDER BY name")
            .fetch_all(&self.shared.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    OrgName::parse(&r.try_get::<String, _>("name")?)?,
                    Timestamp::parse_rfc3339(&r.try_get::<String, _>("created_at")?)?,
                ))
            })
            .collect()
    }
}

pub(crate) async fn find_org_id(
    conn: &mut AnyConnection,
    name: &OrgName,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT id FROM orgs WHERE name = $1")
        .bind(name.as_str().to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

/// The org's id, or an error that says how to create it.
pub(crate) async fn org_id(conn: &mut AnyConnection, name: &OrgName) -> Result<i64, StoreError> {
    find_org_id(conn, name).await?.ok_or_else(|| {
        StoreError::NotFound(format!(
            "organisation '{name}' does not exist; add it first with `portcullis admin org add {name}`"
        ))
    })
}
