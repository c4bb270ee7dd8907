//! The pure domain of Portcullis.
//!
//! Nothing in this crate does IO or reads the clock: every function that depends on time takes
//! `now` as an argument (as `quinn-proto` does), so grants, windows, policies and the audit chain
//! are tested deterministically. The store, the web service and the relay build on these types.
//! [`wire`] holds the relay protocol's frames and their byte encoding (docs/wire-protocol.md).
#![forbid(unsafe_code)]

pub mod access;
pub mod alert;
pub mod audit;
pub mod clock;
pub mod clockwatch;
pub mod contact;
pub mod device;
pub mod disk;
pub mod error;
pub mod ids;
pub mod liveness;
pub mod modbus;
pub mod names;
pub mod notify;
pub mod policy;
pub mod request;
pub mod role;
pub mod timestamp;
pub mod window;
pub mod wire;

pub use access::{Access, Mode, Protocol, WritePolicy, WriteScope};
pub use clock::Clock;
pub use contact::{Email, TimeZoneName};
pub use device::{Criticality, Device, DeviceProfile, NetworkAddress, Port, Target};
pub use error::ValidationError;
pub use ids::GrantId;
pub use names::{DeviceName, OrgName, SiteName, Username};
pub use policy::DevicePolicy;
pub use request::{AccessRequest, Approval, RequestState, TransitionError};
pub use role::Role;
pub use timestamp::Timestamp;
pub use window::Window;
