//! The device inventory and each device's access policy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use portcullis_core::access::{join_protocols, parse_protocols};
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    WritePolicy, WriteScope,
};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::orgs::org_id;
use crate::relay::GrantChange;
use crate::{AuditActor, Store, StoreError};

const DEVICE_COLUMNS: &str = "id, name, address, criticality, device_type, site, owner, vendor, \
    purpose, data_handled, access_method, firmware, support_contact, allowed_ports, \
    max_window_secs, approvals_required, protocols, writes, write_units, write_registers";

impl Store {
    pub async fn add_device(&self, by: &AuditActor, device: &Device) -> Result<(), StoreError> {
        device.profile.validate()?;
        let mut tx = self.begin_write().await?;
        if find_device_id(tx.conn(), &device.name).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "device '{}' already exists",
                device.name
            )));
        }
        let org_ids = org_ids(tx.conn(), &device.policy.allowed_orgs).await?;
        let now = tx.now().to_rfc3339();
        let p = &device.profile;
        let row = sqlx::query(
            "INSERT INTO devices (name, address, criticality, device_type, site, owner, vendor, \
             purpose, data_handled, access_method, firmware, support_contact, allowed_ports, \
             max_window_secs, approvals_required, created_at, updated_at, protocols, writes, \
             write_units, write_registers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, \
             $17, $18, $19, $20) RETURNING id",
        )
        .bind(device.name.as_str().to_owned())
        .bind(device.address.as_str().to_owned())
        .bind(device.criticality.as_str())
        .bind(p.device_type.clone())
        .bind(p.site.clone())
        .bind(p.owner.clone())
        .bind(p.vendor.clone())
        .bind(p.purpose.clone())
        .bind(p.data_handled.clone())
        .bind(p.access_method.clone())
        .bind(p.firmware.clone())
        .bind(p.support_contact.clone())
        .bind(Port::join(&device.policy.allowed_ports))
        .bind(secs(device.policy.max_window))
        .bind(i64::from(device.policy.approvals_required))
        .bind(now)
        .bind(join_protocols(&device.policy.protocols))
        .bind(device.policy.writes.as_str())
        .bind(device.policy.write_scope.join_units())
        .bind(device.policy.write_scope.join_registers())
        .fetch_one(tx.conn())
        .await?;
        let id: i64 = row.try_get("id")?;
        insert_device_orgs(tx.conn(), id, &org_ids).await?;
        let details = serde_json::to_value(device).unwrap_or_default();
        tx.audit(
            &by.draft("device.add")
                .target(format!("device:{}", device.name))
                .details(details),
        )
        .await?;
        tx.commit().await
    }

    /// Replaces a device's policy; the change is audited with the old and the new policy.
    pub async fn set_device_policy(
        &self,
        by: &AuditActor,
        name: &DeviceName,
        policy: &DevicePolicy,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let old = load_device(tx.conn(), name)
            .await?
            .ok_or_else(|| not_found(name))?;
        let id = find_device_id(tx.conn(), name)
            .await?
            .ok_or_else(|| not_found(name))?;
        let org_ids = org_ids(tx.conn(), &policy.allowed_orgs).await?;
        sqlx::query(
            "UPDATE devices SET allowed_ports = $1, max_window_secs = $2, approvals_required = $3, \
             updated_at = $4, protocols = $5, writes = $6, write_units = $7, \
             write_registers = $8 WHERE id = $9",
        )
        .bind(Port::join(&policy.allowed_ports))
        .bind(secs(policy.max_window))
        .bind(i64::from(policy.approvals_required))
        .bind(tx.now().to_rfc3339())
        .bind(join_protocols(&policy.protocols))
        .bind(policy.writes.as_str())
        .bind(policy.write_scope.join_units())
        .bind(policy.write_scope.join_registers())
        .bind(id)
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM device_orgs WHERE device_id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        insert_device_orgs(tx.conn(), id, &org_ids).await?;
        let details = serde_json::json!({ "device": name, "old": old.policy, "new": policy });
        tx.audit(
            &by.draft("device.set_policy")
                .target(format!("device:{name}"))
                .details(details),
        )
        .await?;
        tx.notify(GrantChange::Device(name.as_str().to_owned()))
            .await?;
        tx.commit().await
    }

    pub async fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY name"
        )))
        .fetch_all(&mut *conn)
        .await?;
        let mut orgs = all_device_orgs(&mut conn).await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                device_from_row(r, orgs.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    pub async fn device(&self, name: &DeviceName) -> Result<Option<Device>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        load_device(&mut conn, name).await
    }
}

fn not_found(name: &DeviceName) -> StoreError {
    StoreError::NotFound(format!("device '{name}' does not exist"))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

async fn org_ids(
    conn: &mut AnyConnection,
    orgs: &BTreeSet<OrgName>,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(orgs.len());
    for o in orgs {
        ids.push(org_id(conn, o).await?);
    }
    Ok(ids)
}

async fn insert_device_orgs(
    conn: &mut AnyConnection,
    id: i64,
    org_ids: &[i64],
) -> Result<(), StoreError> {
    for org in org_ids {
        sqlx::query("INSERT INTO device_orgs (device_id, org_id) VALUES ($1, $2)")
            .bind(id)
            .bind(*org)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(crate) async fn find_device_id(
    conn: &mut AnyConnection,
    name: &DeviceName,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT id FROM devices WHERE name = $1")
        .bind(name.as_str().to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

pub(crate) async fn load_device(
    conn: &mut AnyConnection,
    name: &DeviceName,
) -> Result<Option<Device>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE name = $1"
    )))
    .bind(name.as_str().to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.try_get("id")?;
    let orgs = sqlx::query(
        "SELECT o.name FROM device_orgs d JOIN orgs o ON o.id = d.org_id WHERE d.device_id = $1",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok(OrgName::parse(&r.try_get::<String, _>("name")?)?))
    .collect::<Result<BTreeSet<_>, StoreError>>()?;
    device_from_row(&row, orgs).map(Some)
}

async fn all_device_orgs(
    conn: &mut AnyConnection,
) -> Result<BTreeMap<i64, BTreeSet<OrgName>>, StoreError> {
    let rows =
        sqlx::query("SELECT d.device_id, o.name FROM device_orgs d JOIN orgs o ON o.id = d.org_id")
            .fetch_all(conn)
            .await?;
    let mut out: BTreeMap<i64, BTreeSet<OrgName>> = BTreeMap::new();
    for r in &rows {
        let org = OrgName::parse(&r.try_get::<String, _>("name")?)?;
        out.entry(r.try_get("device_id")?).or_default().insert(org);
    }
    Ok(out)
}

fn device_from_row(r: &AnyRow, orgs: BTreeSet<OrgName>) -> Result<Device, StoreError> {
    let text = |c: &str| r.try_get::<String, _>(c);
    let max_window: i64 = r.try_get("max_window_secs")?;
    let approvals: i64 = r.try_get("approvals_required")?;
    let policy = DevicePolicy::new(
        Port::parse_list(&text("allowed_ports")?)?,
        Duration::from_secs(u64::try_from(max_window).unwrap_or(0)),
        u8::try_from(approvals).unwrap_or(0),
        orgs,
    )?
    .with_protocols(
        parse_protocols(&text("protocols")?)?,
        text("writes")?.parse::<WritePolicy>()?,
        WriteScope {
            units: WriteScope::parse_units(&text("write_units")?)?,
            registers: WriteScope::parse_registers(&text("write_registers")?)?,
        },
    )?;
    Ok(Device {
        name: DeviceName::parse(&text("name")?)?,
        address: NetworkAddress::parse(&text("address")?)?,
        criticality: text("criticality")?.parse::<Criticality>()?,
        profile: DeviceProfile {
            device_type: text("device_type")?,
            site: text("site")?,
            owner: text("owner")?,
            vendor: text("vendor")?,
            purpose: text("purpose")?,
            data_handled: text("data_handled")?,
            access_method: text("access_method")?,
            firmware: text("firmware")?,
            support_contact: text("support_contact")?,
        },
        policy,
    })
}
