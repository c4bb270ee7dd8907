//! The one snapshot the grant-liveness decision (`portcullis_core::liveness`) is made from.

use portcullis_core::liveness::GrantSnapshot;

use crate::{Store, StoreError};

impl Store {
    /// Grant `id` with its vendor's account, the device as the inventory has it now and the
    /// registered site its `site` field names. `None`: no such grant. The grant's state is as
    /// of now, with an end seen here for the first time persisted ([`Store::request`]).
    pub async fn grant_snapshot(&self, id: i64) -> Result<Option<GrantSnapshot>, StoreError> {
        let Some(rec) = self.request(id).await? else {
            return Ok(None);
        };
        let request = rec.request;
        let vendor = self.vendor_account(&request.requester).await?;
        let device = self.device(&request.device).await?;
        let site = match device.as_ref().map(|d| d.profile.site.trim()) {
            None | Some("") => None,
            Some(name) => self.site(name).await?.map(|rec| rec.name),
        };
        Ok(Some(GrantSnapshot {
            request,
            vendor,
            device,
            site,
        }))
    }
}
