//! Both QEMUs made ready for a migration: what they are (versions, the
//! machine type), the capabilities the spec asks for checked and set on
//! each, its parameters typed and set, and TLS.

use qapi::Enum;
use qapi::qmp::{
    MigrateSetParameters, MigrationCapabilityStatus, migrate_set_capabilities,
    migrate_set_parameters, query_migrate_parameters,
};
use serde_json::Value;
use virtest_host::Host;
use virtest_qemu_cmdline::binary;
use virtest_qemu_cmdline::{PropsOption, QemuCmdline};
use virtest_qmp::Qmp;
use virtest_qmp::outgoing::UNCAPPED_BANDWIDTH;
use virtest_vm::Vm;

use crate::error::{Error, Result};
use crate::mode::MigrationMode;
use crate::spec::{MigrationSpec, PAUSE_POSTCOPY_BANDWIDTH};
use crate::tls::{self, Tls};

/// Refuses, before anything starts, a VM whose devices QEMU cannot
/// migrate: a shared host folder (virtio-9p keeps the guest's open files
/// in QEMU, so QEMU blocks the migration once the guest mounts it).
pub(crate) fn check_migratable(vm: &Vm) -> Result<()> {
    let shares = &vm.config().shares;
    if shares.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = shares
        .iter()
        .map(|s| format!("`{}` ({})", s.tag, s.path.display()))
        .collect();
    Err(Error::NotMigratable {
        reason: format!(
            "it shares host folders into the guest: {}. QEMU cannot migrate a virtio-9p share \
             (the guest's open files on it live in the source QEMU). Nothing was started; give the VM no shared folder to migrate it (copy files in and out \
             with `remote`, or over a disk)",
            named.join(", ")
        ),
    })
}

/// A destination binary the spec names must be a QEMU system emulator
/// for a guest of `arch` on `machine`, checked as the source's is (found,
/// probed, offering the machine type), before anything starts:
/// `/bin/true` is not a QEMU, and `qemu-system-x86_64` does not run an
/// arm64 guest.
pub(crate) async fn check_destination_qemu(
    binary: &std::path::Path,
    machine: &str,
    arch: virtest_qemu_cmdline::arch::Arch,
) -> Result<()> {
    use virtest_qemu_cmdline::binary::BinaryKind;
    let (binary, machine) = (binary.to_path_buf(), machine.to_string());
    tokio::task::spawn_blocking(move || {
        let found = binary::find_for(BinaryKind::Destination, arch, Some(&binary))?;
        binary::probe(&found)?.check_machine(&machine, arch)
    })
    .await
    .expect("probing does not panic")
    .map_err(|e| Error::Destination(virtest_vm::Error::Qemu(e)))
}

/// The source's and the destination's QEMU versions, and the machine type
/// the guest runs on (as the destination resolves its `-machine`), for
/// the report; `?` for what a probe cannot tell.
pub(crate) fn qemus_and_machine(
    source: QemuCmdline,
    destination: &QemuCmdline,
) -> (String, String, String) {
    let version = |cmdline: &QemuCmdline| {
        binary::probe(&cmdline.binary).map_or_else(|_| "?".to_string(), |p| p.version.to_string())
    };
    let asked = destination
        .props(PropsOption::Machine)
        .and_then(|p| p.head())
        .unwrap_or("?");
    let machine = binary::probe(&destination.binary)
        .ok()
        .and_then(|p| p.resolve_machine(asked).map(str::to_string))
        .unwrap_or_else(|| asked.to_string());
    (version(&source), version(destination), machine)
}

/// Checks that the `side` QEMU offers every capability in `wanted`; an
/// unknown one is an error listing those it offers.
pub(crate) async fn check_capabilities(
    side: &'static str,
    qmp: &Qmp,
    wanted: &[String],
) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = qmp
        .execute_raw("query-migrate-capabilities", serde_json::Value::Null)
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: "`query-migrate-capabilities`".into(),
            source,
        })?;
    let offered: Vec<String> = offered
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|status| status["capability"].as_str().map(str::to_string))
        .collect();
    match wanted.iter().find(|name| !offered.contains(name)) {
        Some(unknown) => Err(Error::UnknownCapability {
            side,
            capability: unknown.clone(),
            offered,
        }),
        None => Ok(()),
    }
}

/// `parameters` (by QEMU's names, as text) as `migrate-set-parameters`
/// arguments, each value given the type of the source QEMU's current one;
/// an unknown name is an error listing the ones it has.
pub(crate) async fn typed_parameters(
    source: &Qmp,
    parameters: &[(String, String)],
) -> Result<Value> {
    let mut typed = serde_json::Map::new();
    if parameters.is_empty() {
        return Ok(Value::Object(typed));
    }
    let current = source
        .execute_raw("query-migrate-parameters", Value::Null)
        .await
        .map_err(|source| Error::Qmp {
            side: "source",
            step: "`query-migrate-parameters`".into(),
            source,
        })?;
    for (name, text) in parameters {
        let refuse = |what: String| Error::Spec(format!("migration parameter `{name}`: {what}"));
        let value = match current.get(name) {
            None => {
                let known: Vec<&str> = current
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.keys().map(String::as_str))
                    .collect();
                return Err(Error::Spec(format!(
                    "unknown migration parameter `{name}`; this QEMU has: {}",
                    known.join(", ")
                )));
            }
            Some(Value::Bool(_)) => Value::Bool(
                text.parse()
                    .map_err(|_| refuse(format!("takes true or false, not `{text}`")))?,
            ),
            Some(Value::Number(_)) => Value::from(
                text.parse::<u64>()
                    .map_err(|_| refuse(format!("takes a whole number, not `{text}`")))?,
            ),
            Some(Value::String(_)) => Value::String(text.clone()),
            Some(other) => {
                return Err(refuse(format!(
                    "takes a structured value ({other}), which virtest sets only through \
                     MigrationSpec's own fields"
                )));
            }
        };
        typed.insert(name.clone(), value);
    }
    Ok(Value::Object(typed))
}

/// Capabilities on both sides, parameters where they apply.
pub(crate) async fn configure(
    source: &Qmp,
    destination: &Qmp,
    spec: &MigrationSpec,
    extra_parameters: &Value,
) -> Result<()> {
    let capabilities: Vec<_> = spec
        .capabilities()
        .into_iter()
        .map(|(capability, state)| MigrationCapabilityStatus { capability, state })
        .collect();
    // Set every time: a source keeps what an earlier, failed migration
    // set. Unset values take the fresh destination's, QEMU's defaults.
    let defaults = destination
        .execute(query_migrate_parameters {})
        .await
        .map_err(|source| Error::Qmp {
            side: "destination",
            step: "`query-migrate-parameters`".into(),
            source,
        })?;
    let source_params = MigrateSetParameters {
        // Paused postcopy needs postcopy to begin: uncapped, the tiny
        // guest's precopy could complete first.
        max_bandwidth: Some(spec.max_bandwidth.unwrap_or(if spec.pauses_postcopy() {
            PAUSE_POSTCOPY_BANDWIDTH
        } else {
            UNCAPPED_BANDWIDTH
        })),
        downtime_limit: spec.downtime_limit_ms.or(defaults.downtime_limit),
        xbzrle_cache_size: spec.xbzrle_cache_bytes,
        multifd_channels: spec.multifd_channels,
        max_postcopy_bandwidth: Some(if spec.pauses_postcopy() {
            PAUSE_POSTCOPY_BANDWIDTH
        } else {
            0
        }),
        ..MigrateSetParameters::default()
    };
    let destination_params = MigrateSetParameters {
        multifd_channels: spec.multifd_channels,
        ..MigrateSetParameters::default()
    };
    for (side, qmp, params) in [
        ("source", source, source_params),
        ("destination", destination, destination_params),
    ] {
        let failed = |step: &str| {
            let step = step.to_string();
            move |source| Error::Qmp { side, step, source }
        };
        // A QEMU keeps what an earlier migration turned on: a source that
        // came in over mapped-ram would go out over it too.
        let stale = stale_capabilities(qmp, spec)
            .await
            .map_err(failed("`query-migrate-capabilities`"))?;
        if !stale.is_empty() {
            let off: Vec<_> = stale
                .iter()
                .map(|name| serde_json::json!({ "capability": name, "state": false }))
                .collect();
            let args = serde_json::json!({ "capabilities": off });
            qmp.execute_raw("migrate-set-capabilities", args)
                .await
                .map_err(failed(&format!(
                    "`migrate-set-capabilities` (turning off {})",
                    stale.join(", ")
                )))?;
        }
        qmp.execute(migrate_set_capabilities {
            capabilities: capabilities.clone(),
        })
        .await
        .map_err(failed("`migrate-set-capabilities`"))?;
        if !spec.extra_capabilities.is_empty() {
            let extra: Vec<_> = spec
                .extra_capabilities
                .iter()
                .map(|name| serde_json::json!({ "capability": name, "state": true }))
                .collect();
            let args = serde_json::json!({ "capabilities": extra });
            qmp.execute_raw("migrate-set-capabilities", args)
                .await
                .map_err(failed("`migrate-set-capabilities` (extra)"))?;
        }
        qmp.execute(migrate_set_parameters(params))
            .await
            .map_err(failed("`migrate-set-parameters`"))?;
        if extra_parameters.as_object().is_some_and(|o| !o.is_empty()) {
            qmp.execute_raw("migrate-set-parameters", extra_parameters.clone())
                .await
                .map_err(failed(&format!(
                    "`migrate-set-parameters` {extra_parameters}"
                )))?;
        }
    }
    Ok(())
}

/// The capabilities on in the QEMU that `spec` neither manages (those are
/// set each time) nor asks for among its extra ones.
async fn stale_capabilities(
    qmp: &Qmp,
    spec: &MigrationSpec,
) -> Result<Vec<String>, virtest_qmp::Error> {
    let states = qmp
        .execute_raw("query-migrate-capabilities", Value::Null)
        .await?;
    let managed: Vec<&str> = spec
        .capabilities()
        .iter()
        .map(|(capability, _)| capability.name())
        .collect();
    Ok(states
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == true)
        .filter_map(|c| c["capability"].as_str())
        .filter(|name| {
            !managed.contains(name) && !spec.extra_capabilities.iter().any(|e| e == name)
        })
        .map(str::to_string)
        .collect())
}

/// TLS on both sides as the spec asks: the credentials objects (their
/// files copied to a host that does not see this machine's) and
/// `tls-creds` (and the source's `tls-hostname`), or both cleared, since a
/// QEMU keeps what an earlier migration set. Returns the credentials, for
/// the disks' copy to use too.
pub(crate) async fn secure(
    vm: &Vm,
    source: &Qmp,
    destination: &Qmp,
    spec: &MigrationSpec,
    to: &Host,
) -> Result<Option<TlsIds>> {
    let crossing = !to.same(vm.host());
    let mut ids = None;
    let (source_args, destination_args) = match spec.tls {
        None => (
            serde_json::json!({ "tls-creds": "", "tls-hostname": "" }),
            serde_json::json!({ "tls-creds": "" }),
        ),
        Some(kind) => {
            let runtime_dir = vm.files().runtime_dir();
            let dir = tls::credentials(kind, runtime_dir)?;
            let server_dir = match spec.tls_foreign_destination {
                true => tls::foreign_credentials(kind, runtime_dir)?,
                false => dir.clone(),
            };
            // Named for the local directory: a foreign one is another.
            let on = |host: &Host, local: &std::path::Path| {
                let runtime = host.runtime_dir().unwrap_or(runtime_dir);
                let name = local.strip_prefix(runtime_dir).unwrap_or(local);
                let name = name.to_string_lossy().replace('/', "-");
                runtime.join(vm.id()).join(name)
            };
            let (to_server, to_client) = (on(to, &server_dir), on(vm.host(), &dir));
            let (server_dir, client_dir) = tokio::try_join!(
                tls::place(to, kind, &server_dir, true, &to_server),
                tls::place(vm.host(), kind, &dir, false, &to_client),
            )?;
            let server = tls::add_object(destination, kind, &server_dir, true).await?;
            let client = tls::add_object(source, kind, &client_dir, false).await?;
            let hostname = match (&spec.tls_hostname, spec.mode, kind) {
                (Some(name), _, _) => name.clone(),
                (None, MigrationMode::Unix | MigrationMode::Fd, Tls::X509) => "localhost".into(),
                // The VM's certificate names this machine; between hosts
                // the destination's address is not in it.
                (None, MigrationMode::Tcp, Tls::X509) if crossing => "localhost".into(),
                (None, _, _) => String::new(),
            };
            ids = Some(TlsIds {
                client: client.clone(),
                server: server.clone(),
                hostname: hostname.clone(),
            });
            (
                serde_json::json!({ "tls-creds": client, "tls-hostname": hostname }),
                serde_json::json!({ "tls-creds": server }),
            )
        }
    };
    for (side, qmp, args) in [
        ("source", source, source_args),
        ("destination", destination, destination_args),
    ] {
        qmp.execute_raw("migrate-set-parameters", args.clone())
            .await
            .map_err(|source| Error::Qmp {
                side,
                step: format!("`migrate-set-parameters` {args}"),
                source,
            })?;
    }
    Ok(ids)
}

/// The TLS credentials objects a migration set up, and the name the
/// source checks in the server's certificate (empty: its address).
#[derive(Debug, Clone)]
pub(crate) struct TlsIds {
    /// The source's (client) object.
    pub client: String,
    /// The destination's (server) object.
    pub server: String,
    /// `tls-hostname`.
    pub hostname: String,
}
