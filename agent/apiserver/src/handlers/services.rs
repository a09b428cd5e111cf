//! Service addresses: a cluster IP from the service range (`10.43.0.0/16`, K3s' default) for
//! every Service but headless (`clusterIP: None`) and `ExternalName` ones, and node ports
//! (30000–32767) for `NodePort` and `LoadBalancer` Services, as kube-apiserver allocates them.
//! An address or port the client names must be in range and free. Both are immutable once
//! set: an update that leaves them out keeps them.
//!
//! Free values are found by reading the Services in the datastore; two creates racing for
//! the same value is unlikely (a random start in 65,534 addresses) and not prevented.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::Api;
use crate::error::ApiError;
use crate::resources;

/// The service range: 10.43.0.0/16.
pub const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
/// The `kubernetes` Service's address (the range's first); never handed out otherwise.
pub const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);
/// Kept for the cluster DNS, as K3s does; never handed out otherwise.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn in_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - RANGE.1);
    u32::from(ip) & mask == u32::from(RANGE.0)
}

impl Api {
    /// Fills in (or checks) a new Service's cluster IP and node ports.
    pub(super) fn allocate_service(&self, svc: &mut Value, name: &str) -> Result<(), ApiError> {
        let (ips, ports) = self.used_service_addresses()?;
        let invalid = |message: String| ApiError::Invalid {
            subject: crate::error::Subject {
                group: String::new(),
                kind: "Service".into(),
                name: name.to_owned(),
            },
            message,
        };
        let kind = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned();
        if kind != "ExternalName" {
            match svc["spec"]["clusterIP"].as_str().unwrap_or("") {
                "None" => {}
                "" => {
                    let ip = free_ip(&ips).ok_or_else(|| {
                        invalid("spec.clusterIP: Internal error: the service range 10.43.0.0/16 is full".into())
                    })?;
                    svc["spec"]["clusterIP"] = json!(ip.to_string());
                }
                given => {
                    let ip: Ipv4Addr = given.parse().map_err(|_| {
                        invalid(format!("spec.clusterIP: Invalid value: {given:?}: must be a valid IP address, \"None\" or empty"))
                    })?;
                    if !in_range(ip) {
                        return Err(invalid(format!(
                            "spec.clusterIP: Invalid value: {given:?}: provided IP is not in the valid range; the range of valid IPs is 10.43.0.0/16"
                        )));
                    }
                    if ips.contains(&ip) {
                        return Err(invalid(format!(
                            "spec.clusterIP: Invalid value: {given:?}: provided IP is already allocated"
                        )));
                    }
                }
            }
            let ip = svc["spec"]["clusterIP"].clone();
            svc["spec"]["clusterIPs"] = json!([ip]);
            if ip != "None" {
                svc["spec"]["ipFamilies"] = json!(["IPv4"]);
                svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        if svc["spec"]["type"].is_null() {
            svc["spec"]["type"] = json!("ClusterIP");
        }
        if svc["spec"]["sessionAffinity"].is_null() {
            svc["spec"]["sessionAffinity"] = json!("None");
        }
        let needs_ports = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
        let mut taken = ports;
        for (i, port) in svc["spec"]["ports"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if port["protocol"].is_null() {
                port["protocol"] = json!("TCP");
            }
            if port["targetPort"].is_null() {
                port["targetPort"] = port["port"].clone();
            }
            if !needs_ports {
                continue;
            }
            match port["nodePort"].as_u64() {
                None | Some(0) => {
                    let free = free_port(&taken).ok_or_else(|| {
                        invalid(format!("spec.ports[{i}].nodePort: Internal error: no free node port in 30000-32767"))
                    })?;
                    taken.insert(free);
                    port["nodePort"] = json!(free);
                }
                Some(n) => {
                    let n = u16::try_from(n).unwrap_or(0);
                    if !NODE_PORTS.contains(&n) {
                        return Err(invalid(format!(
                            "spec.ports[{i}].nodePort: Invalid value: {}: provided port is not in the valid range. The range of valid ports is 30000-32767",
                            port["nodePort"]
                        )));
                    }
                    if !taken.insert(n) {
                        return Err(invalid(format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is already allocated"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The cluster IPs and node ports Services hold.
    fn used_service_addresses(&self) -> Result<(HashSet<Ipv4Addr>, HashSet<u16>), ApiError> {
        let services = resources::find("", "v1", "services").expect("services are served");
        let mut ips: HashSet<Ipv4Addr> = HashSet::new();
        let mut ports = HashSet::new();
        for kv in self
            .store
            .list(&services.prefix(None), None, 0, None)?
            .items
        {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if let Some(ip) = svc["spec"]["clusterIP"]
                .as_str()
                .and_then(|s| s.parse().ok())
            {
                ips.insert(ip);
            }
            for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
                if let Some(n) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                    ports.insert(n);
                }
            }
        }
        Ok((ips, ports))
    }
}

/// Keeps a Service's cluster IP and node ports across an update that leaves them out;
/// refuses one that changes the cluster IP.
pub(super) fn keep_addresses(old: &Value, new: &mut Value) -> Result<(), String> {
    let before = old["spec"]["clusterIP"].as_str().unwrap_or("");
    match new["spec"]["clusterIP"].as_str().unwrap_or("") {
        "" if !before.is_empty() => {
            new["spec"]["clusterIP"] = json!(before);
            new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
        now if now != before && !before.is_empty() => {
            return Err(format!(
                "spec.clusterIP: Invalid value: {now:?}: field is immutable"
            ))
        }
        _ => {}
    }
    for field in ["ipFamilies", "ipFamilyPolicy"] {
        if new["spec"][field].is_null() && !old["spec"][field].is_null() {
            new["spec"][field] = old["spec"][field].clone();
        }
    }
    // Node ports: an update without one keeps the port the same-numbered port had.
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for port in new["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if port["nodePort"].as_u64().is_none_or(|n| n == 0) {
            if let Some(was) = old_ports
                .iter()
                .find(|p| p["port"] == port["port"] && p["protocol"] == port["protocol"])
                .and_then(|p| p.get("nodePort"))
            {
                port["nodePort"] = was.clone();
            }
        }
    }
    Ok(())
}

fn free_ip(used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let base = u32::from(RANGE.0);
    let size = 1u32 << (32 - RANGE.1);
    // Start somewhere random, skip the network and broadcast addresses.
    let mut start = [0u8; 4];
    getrandom::fill(&mut start).ok()?;
    let start = u32::from_le_bytes(start) % (size - 2);
    (0..size - 2)
        .map(|i| Ipv4Addr::from(base + 1 + (start + i) % (size - 2)))
        .find(|ip| !used.contains(ip) && *ip != KUBERNETES_IP && *ip != DNS_IP)
}

fn free_port(used: &HashSet<u16>) -> Option<u16> {
    let mut start = [0u8; 2];
    getrandom::fill(&mut start).ok()?;
    let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
    let start = u16::from_le_bytes(start) % span;
    (0..span)
        .map(|i| NODE_PORTS.start() + (start + i) % span)
        .find(|p| !used.contains(p))
}
