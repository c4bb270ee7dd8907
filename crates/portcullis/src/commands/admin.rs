//! `portcullis admin org|user|device|site ...`: every change is written with its audit event.

mod clock;
mod site;

use std::collections::BTreeSet;
use std::process::ExitCode;

use portcullis_core::access::{join_protocols, parse_protocols};
use portcullis_core::window::format_duration;
use portcullis_core::{
    Device, DeviceName, DevicePolicy, DeviceProfile, Email, NetworkAddress, OrgName, Port,
    TimeZoneName, Username, ValidationError, WriteScope,
};
use portcullis_store::{ContactChange, NewUser, Store};

use crate::cli::{
    AdminCommand, ContactArgs, DeviceAdd, DeviceCommand, Format, OrgCommand, OutFormat, PolicyArgs,
    UserCommand,
};
use crate::context::{Context, cli_actor};
use crate::output::table;

pub async fn run(ctx: &Context, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let result = match cmd {
        AdminCommand::Org(c) => org(&store, c).await,
        AdminCommand::User(c) => user(&store, c).await,
        AdminCommand::Device(c) => device(&store, c).await,
        AdminCommand::Site(c) => site::run(&store, c).await,
        AdminCommand::Clock(c) => clock::run(&store, c).await,
    };
    store.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

async fn org(store: &Store, cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Add { name } => {
            let name = OrgName::parse(&name)?;
            store.add_org(&cli_actor(), &name).await?;
            println!("added organisation '{name}'");
        }
        OrgCommand::List { format } => {
            let orgs = store.list_orgs().await?;
            match format {
                Format::Json => {
                    for (name, created) in orgs {
                        println!(
                            "{}",
                            serde_json::json!({ "name": name, "created_at": created })
                        );
                    }
                }
                Format::Table => {
                    let rows: Vec<_> = orgs
                        .iter()
                        .map(|(n, c)| vec![n.to_string(), c.to_string()])
                        .collect();
                    print!("{}", table(&["NAME", "CREATED"], &rows));
                }
            }
        }
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The command line's contact options as a store change: `''` clears a value.
fn contact_change(a: ContactArgs) -> anyhow::Result<ContactChange> {
    let clearable = |v: Option<String>| v.map(|s| Some(s).filter(|s| !s.trim().is_empty()));
    Ok(ContactChange {
        email: clearable(a.email)
            .map(|e| e.as_deref().map(Email::parse).transpose())
            .transpose()?,
        time_zone: clearable(a.time_zone)
            .map(|t| t.as_deref().map(TimeZoneName::parse).transpose())
            .transpose()?,
        notify_sessions: a.notify_sessions,
        notify_alerts: a.notify_alerts,
    })
}

async fn user(store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            username,
            role,
            org,
            contact,
            format,
        } => {
            let new = NewUser {
                username: Username::parse(&username)?,
                role,
                org: org.as_deref().map(OrgName::parse).transpose()?,
            };
            let (rec, code) = store
                .add_user_with_contact(&cli_actor(), &new, &contact_change(contact)?)
                .await?;
            match format {
                OutFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "username": rec.username,
                        "role": rec.role,
                        "org": rec.org,
                        "enrollment_code": code.code,
                        "expires_at": code.expires_at,
                    })
                ),
                OutFormat::Text => {
                    let org = rec
                        .org
                        .map(|o| format!(" in organisation '{o}'"))
                        .unwrap_or_default();
                    println!("created {} '{}'{org}", rec.role, rec.username);
                    println!("enrollment code: {}", code.code);
                    println!(
                        "it works once, until {}; give it to {} over a channel you trust",
                        code.expires_at, rec.username
                    );
                }
            }
        }
        UserCommand::List { format } => {
            let users = store.list_users().await?;
            let now = store.now();
            match format {
                Format::Json => {
                    for u in &users {
                        let mut v = serde_json::to_value(u)?;
                        v["status"] = u.status(now).into();
                        println!("{v}");
                    }
                }
                Format::Table => {
                    let rows: Vec<_> = users
                        .iter()
                        .map(|u| {
                            vec![
                                u.username.to_string(),
                                u.role.to_string(),
                                u.org
                                    .as_ref()
                                    .map(|o| o.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                u.status(now).into(),
                                u.email
                                    .as_ref()
                                    .map(|e| e.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                u.created_at.to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["USERNAME", "ROLE", "ORG", "STATUS", "EMAIL", "CREATED"],
                            &rows
                        )
                    );
                }
            }
        }
        UserCommand::Set { username, contact } => {
            let change = contact_change(contact)?;
            let u = store
                .set_contact(&cli_actor(), &Username::parse(&username)?, &change)
                .await?;
            println!(
                "updated '{}': e-mail {}, time zone {}, session notices {}, alerts {}",
                u.username,
                u.email.as_ref().map_or("none".into(), |e| e.to_string()),
                u.time_zone
                    .as_ref()
                    .map_or("the plant's".into(), |t| t.to_string()),
                on_off(u.notify_sessions),
                on_off(u.wants_alerts()),
            );
        }
        UserCommand::Disable { username } => {
            let u = store
                .disable_user(&cli_actor(), &Username::parse(&username)?)
                .await?;
            println!("disabled '{}'", u.username);
        }
        UserCommand::Unlock { username } => {
            let u = store
                .unlock_user(&cli_actor(), &Username::parse(&username)?)
                .await?;
            println!("unlocked '{}'", u.username);
        }
        UserCommand::Reset { username, format } => {
            let name = Username::parse(&username)?;
            let code = store.reset_user(&cli_actor(), &name).await?;
            match format {
                OutFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "username": name,
                        "enrollment_code": code.code,
                        "expires_at": code.expires_at,
                    })
                ),
                OutFormat::Text => {
                    println!(
                        "reset '{name}': password and authenticator cleared; sessions, relay tokens and live connections ended"
                    );
                    println!("enrollment code: {}", code.code);
                    println!(
                        "it works once, until {}; give it to {name} over a channel you trust",
                        code.expires_at
                    );
                }
            }
        }
    }
    Ok(())
}

async fn device(store: &Store, cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Add(args) => {
            let device = device_from_args(*args)?;
            store.add_device(&cli_actor(), &device).await?;
            println!("added device '{}' ({})", device.name, device.address);
            // The device is added whatever happens here: a failed look-up must not say otherwise.
            match site::routing_line(store, &device).await {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("note: cannot tell how the relay will reach it: {e:#}"),
            }
            if device.policy.allowed_orgs.is_empty() {
                println!(
                    "note: no organisation may request it yet; allow some with \
                     `portcullis admin device set-policy {} --orgs <a,b>`",
                    device.name
                );
            }
        }
        DeviceCommand::List { format } => {
            let devices = store.list_devices().await?;
            match format {
                Format::Json => {
                    for d in &devices {
                        println!("{}", serde_json::to_string(d)?);
                    }
                }
                Format::Table => {
                    let rows: Vec<_> = devices.iter().map(device_row).collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "NAME",
                                "ADDRESS",
                                "PORTS",
                                "CRITICALITY",
                                "APPROVALS",
                                "MAX-WINDOW",
                                "ORGS",
                                "SITE"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        DeviceCommand::Show { name, format } => {
            let name = DeviceName::parse(&name)?;
            let d = store
                .device(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("device '{name}' does not exist"))?;
            match format {
                OutFormat::Json => println!("{}", serde_json::to_string(&d)?),
                OutFormat::Text => print!("{}", device_text(&d)),
            }
        }
        DeviceCommand::SetPolicy(args) => {
            let name = DeviceName::parse(&args.name)?;
            let current = store
                .device(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("device '{name}' does not exist"))?;
            let policy = merge_policy(&current.policy, &args)?;
            store
                .set_device_policy(&cli_actor(), &name, &policy)
                .await?;
            println!("updated the policy of '{name}'");
        }
    }
    Ok(())
}

fn parse_orgs(text: &str) -> Result<BTreeSet<OrgName>, ValidationError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(OrgName::parse)
        .collect()
}

fn device_from_args(a: DeviceAdd) -> anyhow::Result<Device> {
    let policy = DevicePolicy::new(
        Port::parse_list(&a.ports)?,
        a.max_window,
        a.approvals,
        a.orgs
            .as_deref()
            .map(parse_orgs)
            .transpose()?
            .unwrap_or_default(),
    )?;
    let m = &a.modbus;
    let policy = policy.with_protocols(
        parse_protocols(&m.protocols.join(","))?,
        m.writes.unwrap_or_default(),
        WriteScope {
            units: WriteScope::parse_units(m.write_units.as_deref().unwrap_or(""))?,
            registers: WriteScope::parse_registers(m.write_registers.as_deref().unwrap_or(""))?,
        },
    )?;
    let text = |o: Option<String>| o.unwrap_or_default().trim().to_owned();
    let profile = DeviceProfile {
        device_type: text(a.device_type),
        site: text(a.site),
        owner: text(a.owner),
        vendor: text(a.vendor),
        purpose: text(a.purpose),
        data_handled: text(a.data),
        access_method: text(a.access),
        firmware: text(a.firmware),
        support_contact: text(a.contact),
    };
    profile.validate()?;
    Ok(Device {
        name: DeviceName::parse(&a.name)?,
        address: NetworkAddress::parse(&a.address)?,
        criticality: a.criticality,
        profile,
        policy,
    })
}

fn merge_policy(current: &DevicePolicy, a: &PolicyArgs) -> anyhow::Result<DevicePolicy> {
    let ports = match &a.ports {
        Some(p) => Port::parse_list(p)?,
        None => current.allowed_ports.clone(),
    };
    let max_window = a.max_window.unwrap_or(current.max_window);
    let approvals = a.approvals.unwrap_or(current.approvals_required);
    let orgs = match &a.orgs {
        Some(o) => parse_orgs(o)?,
        None => current.allowed_orgs.clone(),
    };
    // Protocols not given stay as they were, for the ports that remain.
    let m = &a.modbus;
    let protocols = if m.protocols.is_empty() {
        current
            .protocols
            .iter()
            .filter(|(p, _)| ports.contains(p))
            .map(|(p, proto)| (*p, *proto))
            .collect()
    } else {
        parse_protocols(&m.protocols.join(","))?
    };
    let scope = WriteScope {
        units: match &m.write_units {
            Some(u) => WriteScope::parse_units(u)?,
            None => current.write_scope.units.clone(),
        },
        registers: match &m.write_registers {
            Some(r) => WriteScope::parse_registers(r)?,
            None => current.write_scope.registers.clone(),
        },
    };
    Ok(
        DevicePolicy::new(ports, max_window, approvals, orgs)?.with_protocols(
            protocols,
            m.writes.unwrap_or(current.writes),
            scope,
        )?,
    )
}

fn join_orgs(orgs: &BTreeSet<OrgName>) -> String {
    if orgs.is_empty() {
        return "-".into();
    }
    orgs.iter()
        .map(OrgName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn device_row(d: &Device) -> Vec<String> {
    vec![
        d.name.to_string(),
        d.address.to_string(),
        Port::join(&d.policy.allowed_ports),
        d.criticality.as_str().into(),
        d.policy.approvals_required.to_string(),
        format_duration(d.policy.max_window),
        join_orgs(&d.policy.allowed_orgs),
        d.profile.site.clone(),
    ]
}

fn device_text(d: &Device) -> String {
    let p = &d.profile;
    let rows: Vec<(&str, String)> = vec![
        ("name", d.name.to_string()),
        ("address", d.address.to_string()),
        ("type", p.device_type.clone()),
        ("site", p.site.clone()),
        ("owner", p.owner.clone()),
        ("vendor", p.vendor.clone()),
        ("purpose", p.purpose.clone()),
        ("data", p.data_handled.clone()),
        ("access", p.access_method.clone()),
        ("firmware", p.firmware.clone()),
        ("contact", p.support_contact.clone()),
        ("criticality", d.criticality.as_str().into()),
        ("ports", Port::join(&d.policy.allowed_ports)),
        ("max window", format_duration(d.policy.max_window)),
        ("approvals", d.policy.approvals_required.to_string()),
        ("orgs", join_orgs(&d.policy.allowed_orgs)),
        ("protocols", join_protocols(&d.policy.protocols)),
        ("writes", d.policy.writes.as_str().into()),
        ("write units", d.policy.write_scope.join_units()),
        ("write regs", d.policy.write_scope.join_registers()),
    ];
    rows.into_iter()
        .map(|(k, v)| {
            let v = if v.is_empty() {
                "-".into()
            } else {
                crate::output::one_line(&v)
            };
            format!("{:<12} {v}\n", format!("{k}:"))
        })
        .collect()
}
