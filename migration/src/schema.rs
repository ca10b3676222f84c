//! What a QEMU can do, read from its own QMP schema
//! (`query-qmp-schema`), for what its capabilities do not list.

use serde_json::Value;
use virtest_qmp::Qmp;

use crate::error::{Error, Result};

/// Whether the QEMU takes a migration to a file (`file:`, QEMU 8.2 on):
/// its `migrate` command's channel addresses have a `file` case.
pub(crate) async fn has_file_transport(qmp: &Qmp, side: &'static str) -> Result<bool> {
    let schema = qmp
        .execute_raw("query-qmp-schema", Value::Null)
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: "`query-qmp-schema`".into(),
            source,
        })?;
    Ok(address_cases(&schema).is_some_and(|cases| cases.contains(&"file")))
}

/// The cases of the address a `migrate` channel takes (`socket`, `exec`,
/// `rdma`, `file`): `migrate`'s argument `channels`, a list of channels,
/// each with an `addr` union. `None` where the schema has no channels
/// (before 8.2). Type names in an introspected schema are opaque, so the
/// walk goes by members.
fn address_cases(schema: &Value) -> Option<Vec<&str>> {
    let entities = schema.as_array()?;
    let named = |name: &str| entities.iter().find(|e| e["name"].as_str() == Some(name));
    fn member_type<'s>(object: &'s Value, member: &str) -> Option<&'s str> {
        object["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"].as_str() == Some(member))?["type"]
            .as_str()
    }
    let migrate = entities
        .iter()
        .find(|e| e["meta-type"] == "command" && e["name"] == "migrate")?;
    let arguments = named(migrate["arg-type"].as_str()?)?;
    let channels = named(member_type(arguments, "channels")?)?;
    let channel = named(channels["element-type"].as_str()?)?;
    let address = named(member_type(channel, "addr")?)?;
    Some(
        address["variants"]
            .as_array()?
            .iter()
            .filter_map(|v| v["case"].as_str())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of QEMU 10.0's schema around `migrate`, type names
    /// opaque as introspection gives them.
    #[test]
    fn the_file_case_is_found_by_walking_members() {
        let schema = serde_json::json!([
            {"name": "migrate", "meta-type": "command", "arg-type": "7", "ret-type": "0"},
            {"name": "7", "meta-type": "object", "members": [
                {"name": "uri", "type": "str"},
                {"name": "channels", "type": "[9]"}]},
            {"name": "[9]", "meta-type": "array", "element-type": "9"},
            {"name": "9", "meta-type": "object", "members": [
                {"name": "channel-type", "type": "11"},
                {"name": "addr", "type": "12"}]},
            {"name": "12", "meta-type": "object", "tag": "transport",
             "members": [{"name": "transport", "type": "13"}],
             "variants": [{"case": "socket", "type": "14"}, {"case": "exec", "type": "15"},
                          {"case": "rdma", "type": "16"}, {"case": "file", "type": "17"}]}
        ]);
        assert_eq!(
            address_cases(&schema).unwrap(),
            ["socket", "exec", "rdma", "file"]
        );
        // 7.2: `migrate` takes a URI only.
        let old = serde_json::json!([
            {"name": "migrate", "meta-type": "command", "arg-type": "7", "ret-type": "0"},
            {"name": "7", "meta-type": "object", "members": [{"name": "uri", "type": "str"}]}
        ]);
        assert_eq!(address_cases(&old), None);
    }
}
