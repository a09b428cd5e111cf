//! create, update (PUT), delete and deletecollection.

use serde_json::{json, Value};

use super::{decode_object, encode_object, set_resource_version, subject, target, Api, Reply};
use crate::error::{success, ApiError};
use crate::meta::{self, meta_str};
use crate::request::{Action, FieldValidation, Subresource};
use crate::resources::{self, Resource};

use crate::validate::validate_and_default;

/// Largest request body accepted (etcd's default value limit is 1.5 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

impl Api {
    pub(super) fn create(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let resource = action.resource;
        let mut obj = parse_body(resource, body)?;
        let namespace = check_namespace(action, &mut obj)?;
        let meta = meta::metadata(&mut obj);
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
                name = meta::generate_name(prefix);
            }
        }
        let dns_label = resource.kind == "Namespace";
        if resource.group == "rbac.authorization.k8s.io" {
            meta::check_path_segment_name(&name)
        } else {
            meta::check_name(&name, dns_label)
        }
        .map_err(|m| invalid(resource, &name, m))?;
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(invalid(
                resource,
                &name,
                "metadata.resourceVersion: Invalid value: must be empty on create".into(),
            ));
        }
        meta.insert("name".into(), Value::String(name.clone()));
        meta.insert("uid".into(), Value::String(meta::new_uid()));
        meta.insert("creationTimestamp".into(), Value::String(meta::now()));
        meta.insert("generation".into(), json!(1));
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
        let warnings = check_fields(action, &mut obj)?;
        if resource.group.is_empty() && resource.plural == "pods" {
            default_tolerations(&mut obj);
        }
        if resource.kind == "CertificateSigningRequest" {
            // A new request is pending: its requestor is who sent it.
            if let Some(user) = &action.user {
                crate::validate::csr::set_requestor(&mut obj, user);
            }
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
        validate_and_default(resource, &mut obj).map_err(|m| invalid(resource, &name, m))?;
        self.admit(action, &obj, true)?;
        if let Some(ns) = &namespace {
            self.require_namespace(ns)?;
        }
        if is_service(resource) {
            self.allocate_service(&mut obj, &name)?;
        }
        let key = resource.key(namespace.as_deref(), &name);
        if action.options.dry_run {
            if self.store.get(&key)?.is_some() {
                return Err(ApiError::AlreadyExists(subject(resource, &name)));
            }
            return Ok(Reply {
                warnings,
                ..Reply::with_code(201, obj)
            });
        }
        let rev = self
            .store
            .create(&key, &encode_object(&obj))
            .map_err(|e| ApiError::from_store(e, &subject(resource, &name)))?;
        set_resource_version(&mut obj, rev);
        Ok(Reply {
            warnings,
            ..Reply::with_code(201, obj)
        })
    }

    /// Approving a request, or signing one, also needs the verb on its signer (`signers`,
    /// named `<signerName>` or `<domain>/*`), as kube-apiserver's admission checks.
    fn check_signer_verb(&self, action: &Action, csr: &Value, verb: &str) -> Result<(), ApiError> {
        let Some(user) = &action.user else {
            return Ok(());
        };
        let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
        let wildcard = signer
            .split_once('/')
            .map(|(domain, _)| format!("{domain}/*"))
            .unwrap_or_default();
        let attrs = |name: &str| {
            crate::authz::Attributes::resource(
                verb,
                "certificates.k8s.io",
                "signers",
                None,
                Some(name),
            )
        };
        if self.authz.decide(user, &attrs(signer))?.allowed {
            return Ok(());
        }
        self.authz.authorize(user, &attrs(&wildcard))
    }

    pub(super) fn update(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let resource = action.resource;
        let mut obj = match action.subresource.and_then(Subresource::body_kind) {
            Some((api_version, kind)) => parse_body_as(body, kind, api_version)?,
            None => parse_body(resource, body)?,
        };
        check_namespace(action, &mut obj)?;
        let (_, name) = target(action);
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let expected = match meta_str(&obj, "resourceVersion") {
            "" => None,
            rv => Some(rv.parse::<u64>().map_err(|_| {
                invalid(
                    resource,
                    name,
                    format!("metadata.resourceVersion: Invalid value: {rv:?}"),
                )
            })?),
        };
        self.replace(action, obj, expected)
    }

    /// Store `obj` as the new state of the action's object: keep the server-owned metadata,
    /// bump `generation` when anything but metadata/status changed, and write only if the
    /// object changed. `expected`: the client's resourceVersion precondition.
    pub(super) fn replace(
        &self,
        action: &Action,
        mut obj: Value,
        expected: Option<u64>,
    ) -> Result<Reply, ApiError> {
        let resource = action.resource;
        let (ns, name) = target(action);
        let key = resource.key(ns, name);
        let who = subject(resource, name);
        let current = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::NotFound(who.clone()))?;
        if expected.is_some_and(|rv| rv != current.mod_revision) {
            return Err(ApiError::from_store(
                cairn_store::StoreError::Conflict {
                    key,
                    expected: expected.unwrap_or(0),
                    current: current.mod_revision,
                },
                &who,
            ));
        }
        let old = decode_object(&current)?;
        // Subresources: `/scale` writes only spec.replicas, `/status` only the status, and a
        // write to the object itself leaves a status owned by `/status` alone.
        match action.subresource {
            Some(Subresource::Scale) => obj = super::scale::apply(resource, &old, &obj)?,
            Some(Subresource::Status) => {
                let status = obj.get("status").cloned().unwrap_or(Value::Null);
                obj = old.clone();
                obj["status"] = status;
                if resource.kind == "CertificateSigningRequest" {
                    if obj["status"]["certificate"] != old["status"]["certificate"] {
                        self.check_signer_verb(action, &old, "sign")?;
                    }
                    // Approval is not the signer's to change.
                    crate::validate::csr::keep_conditions(&old, &mut obj, true);
                }
            }
            Some(Subresource::Approval) => {
                self.check_signer_verb(action, &old, "approve")?;
                let mut approval = old.clone();
                approval["status"]["conditions"] = obj["status"]["conditions"].clone();
                crate::validate::csr::keep_conditions(&old, &mut approval, false);
                obj = approval;
            }
            None if resource.kind == "CertificateSigningRequest" => {
                // Requests are immutable: only metadata changes through the object itself.
                for part in ["spec", "status"] {
                    match old.get(part) {
                        Some(v) => obj[part] = v.clone(),
                        None => {
                            if let Some(map) = obj.as_object_mut() {
                                map.remove(part);
                            }
                        }
                    }
                }
            }
            None if resource.subresources.contains(&"status") && resource.kind != "Namespace" => {
                match old.get("status") {
                    Some(status) => obj["status"] = status.clone(),
                    None => {
                        if let Some(map) = obj.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            // Bindings and evictions are created, never written here; logs are only read.
            Some(
                Subresource::Binding
                | Subresource::Eviction
                | Subresource::Token
                | Subresource::Log
                | Subresource::Exec
                | Subresource::Attach
                | Subresource::PortForward,
            )
            | None => {}
        }
        let meta = meta::metadata(&mut obj);
        meta.insert("name".into(), Value::String(name.to_owned()));
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        let deleting = old["metadata"].get("deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&obj).into_iter().find(|f| !before.contains(f)) {
                return Err(invalid(
                    resource,
                    name,
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the \
                         object is being deleted, found new finalizers [\"{added}\"]"
                    ),
                ));
            }
        }
        let warnings = check_fields(action, &mut obj)?;
        validate_and_default(resource, &mut obj).map_err(|m| invalid(resource, name, m))?;
        self.admit(action, &obj, false)?;
        if is_service(resource) {
            super::services::keep_addresses(&old, &mut obj)
                .map_err(|m| invalid(resource, name, m))?;
        }
        if spec_changed(&old, &obj) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta::metadata(&mut obj).insert("generation".into(), json!(generation));
        }
        let bytes = encode_object(&obj);
        if bytes == current.value || action.options.dry_run {
            // No change: Kubernetes does not write (the resourceVersion stays).
            set_resource_version(&mut obj, current.mod_revision);
            if action.subresource == Some(Subresource::Scale) {
                obj = super::scale::to_scale(resource, &obj);
            }
            return Ok(Reply {
                warnings,
                ..Reply::ok(obj)
            });
        }
        let namespace = resource.kind == "Namespace" && resource.group.is_empty();
        // A pod in its grace period stays until its kubelet deletes it with grace 0.
        let graceful = old["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|g| g > 0);
        if deleting && finalizers(&obj).is_empty() && !namespace && !graceful {
            // The last finalizer is gone: the deletion asked for earlier happens now.
            let rev = self
                .store
                .delete(&key, Some(current.mod_revision))
                .map_err(|e| ApiError::from_store(e, &who))?;
            set_resource_version(&mut obj, rev);
            // It may have been the last thing keeping its namespace.
            if let Some(ns) = ns {
                self.finish_namespace(ns)?;
            }
            return Ok(Reply {
                warnings,
                ..Reply::ok(obj)
            });
        }
        let rev = self
            .store
            .update(&key, &bytes, current.mod_revision)
            .map_err(|e| ApiError::from_store(e, &who))?;
        set_resource_version(&mut obj, rev);
        if deleting && namespace {
            // A terminating namespace goes when its finalizers and its contents are gone.
            if let Some(gone) = self.finish_namespace(name)? {
                return Ok(Reply {
                    warnings,
                    ..Reply::ok(gone)
                });
            }
        }
        if action.subresource == Some(Subresource::Scale) {
            obj = super::scale::to_scale(resource, &obj);
        }
        Ok(Reply {
            warnings,
            ..Reply::ok(obj)
        })
    }

    pub(super) fn delete(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let resource = action.resource;
        let (ns, name) = target(action);
        let who = subject(resource, name);
        let key = resource.key(ns, name);
        let current = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::NotFound(who.clone()))?;
        let mut obj = decode_object(&current)?;
        check_preconditions(body, &obj, &who)?;
        if action.options.dry_run {
            return Ok(Reply::ok(obj));
        }
        // Foreground and orphan deletions are finalizers the garbage collector acts on.
        if let Some(finalizer) = propagation_finalizer(body)? {
            if obj["metadata"].get("deletionTimestamp").is_none()
                && !finalizers(&obj).contains(&finalizer)
            {
                let meta = meta::metadata(&mut obj);
                let list = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(json!(finalizer));
                }
            }
        }
        if resource.kind == "Namespace" && resource.group.is_empty() {
            let obj = self.delete_namespace(&key, obj, current.mod_revision)?;
            return Ok(Reply::ok(obj));
        }
        let grace = grace_period(resource, &obj, requested_grace(action, body)?);
        let (obj, deleted) = self
            .delete_or_mark(&key, obj, current.mod_revision, grace)
            .map_err(|e| ApiError::from_store(e, &who))?;
        // A pod that outlived its namespace's sweep (its grace period) may have been the
        // last thing keeping the namespace.
        if let (true, Some(ns)) = (deleted, ns) {
            self.finish_namespace(ns)?;
        }
        if obj.is_object() {
            Ok(Reply::ok(obj))
        } else {
            Ok(Reply::ok(success(&who)))
        }
    }

    /// Deletes `obj` (stored at `key`, revision `rev`), or marks it for deletion: while it
    /// has finalizers (it goes when an update removes the last, [`Self::replace`]) or while
    /// it has a grace period (`grace` seconds: a pod a node runs stops first, and its kubelet
    /// then deletes it with grace 0). `deletionTimestamp` is set once; a later deletion may
    /// only shorten the grace period. Returns the object as it now is and whether it is gone.
    pub(super) fn delete_or_mark(
        &self,
        key: &str,
        mut obj: Value,
        rev: u64,
        grace: i64,
    ) -> Result<(Value, bool), cairn_store::StoreError> {
        if grace == 0 && finalizers(&obj).is_empty() {
            if obj["kind"] == "CustomResourceDefinition" {
                // Its objects go with it (kube-apiserver's customresourcecleanup finalizer).
                self.delete_all(&crate::crd::objects_prefix(&obj))?;
            }
            self.store.delete(key, Some(rev))?;
            return Ok((obj, true));
        }
        let meta = meta::metadata(&mut obj);
        match meta
            .get("deletionTimestamp")
            .and_then(Value::as_str)
            .map(str::to_owned)
        {
            Some(since) => {
                let current = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if grace >= current {
                    set_resource_version(&mut obj, rev);
                    return Ok((obj, false));
                }
                // A shorter grace period: the deadline moves closer, never further.
                let sooner = jiff::Timestamp::now().as_second() + grace;
                if since
                    .parse::<jiff::Timestamp>()
                    .map_or(true, |t| sooner < t.as_second())
                {
                    meta.insert(
                        "deletionTimestamp".into(),
                        meta::seconds_from_now(grace).into(),
                    );
                }
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            None => {
                meta.insert(
                    "deletionTimestamp".into(),
                    meta::seconds_from_now(grace).into(),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if obj["kind"] == "Namespace" {
                    obj["status"]["phase"] = json!("Terminating");
                }
            }
        }
        let rev = self.store.update(key, &encode_object(&obj), rev)?;
        set_resource_version(&mut obj, rev);
        Ok((obj, false))
    }

    pub(super) fn delete_collection(
        &self,
        action: &Action,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let asked = requested_grace(action, body)?;
        let mut list_action = action.clone();
        list_action.options.limit = 0;
        list_action.options.continue_token = None;
        let super::read::ListPage {
            items, revision, ..
        } = self.list_items(&list_action)?;
        let mut deleted = Vec::new();
        for obj in items {
            let name = meta_str(&obj, "name").to_owned();
            let ns = meta_str(&obj, "namespace").to_owned();
            let ns = (!ns.is_empty()).then_some(ns.as_str());
            let rev = obj["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            if action.options.dry_run {
                deleted.push(obj);
                continue;
            }
            let grace = grace_period(action.resource, &obj, asked);
            match self.delete_or_mark(&action.resource.key(ns, &name), obj, rev, grace) {
                Ok((obj, _)) => deleted.push(obj),
                // Deleted or changed by someone else meanwhile: not ours to report.
                Err(
                    cairn_store::StoreError::NotFound { .. }
                    | cairn_store::StoreError::Conflict { .. },
                ) => continue,
                Err(e) => return Err(ApiError::from_store(e, &subject(action.resource, &name))),
            }
        }
        Ok(Reply::ok(json!({
            "kind": action.resource.list_kind(),
            "apiVersion": action.resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        })))
    }

    /// Namespaced resources only: the namespace must exist and not be terminating.
    fn require_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        let ns = resources::find("", "v1", "namespaces").expect("namespaces are served");
        match self.store.get(&ns.key(None, namespace))? {
            Some(kv) if Api::namespace_terminating(&decode_object(&kv)?) => {
                Err(ApiError::Forbidden(format!(
                    "forbidden: unable to create new content in namespace {namespace} because it is being terminated"
                )))
            }
            Some(_) => Ok(()),
            None => Err(ApiError::NamespaceNotFound(namespace.to_owned())),
        }
    }

    /// Deletes every object under `prefix`.
    fn delete_all(&self, prefix: &str) -> Result<(), cairn_store::StoreError> {
        let page = self.store.list(prefix, None, 0, None)?;
        for kv in page.items {
            match self.store.delete(&kv.key, None) {
                Ok(_) | Err(cairn_store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn is_service(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

/// `metadata.finalizers` of an object.
fn finalizers(obj: &Value) -> Vec<&str> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Applies `fieldValidation` to a written object: unknown fields are an error (Strict) or
/// are dropped (Warn: with one warning each; Ignore). Returns the warnings.
fn check_fields(action: &Action, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let resource = action.resource;
    let unknown = crate::openapi::unknown_fields(resource, obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let named: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{}\"", p.trim_start_matches('.')))
        .collect();
    match action.options.field_validation {
        FieldValidation::Strict => Err(ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {fields}",
            kind = resource.kind,
            version = resource.version,
            fields = named.join(", ")
        ))),
        FieldValidation::Warn => {
            crate::openapi::remove_fields(obj, &unknown);
            Ok(named)
        }
        FieldValidation::Ignore => {
            crate::openapi::remove_fields(obj, &unknown);
            Ok(Vec::new())
        }
    }
}

fn invalid(resource: &Resource, name: &str, message: String) -> ApiError {
    ApiError::Invalid {
        subject: crate::error::Subject {
            group: resource.group.to_owned(),
            kind: resource.kind.to_owned(),
            name: name.to_owned(),
        },
        message,
    }
}

/// Decode a JSON body and check its `kind`/`apiVersion` (filled in when missing).
pub(super) fn parse_body(resource: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    parse_body_as(body, resource.kind, &resource.api_version())
}

/// Parses a body that must be of `kind` in `api_version` (filled in when absent).
pub(super) fn parse_body_as(body: &[u8], kind: &str, api_version: &str) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge { limit: MAX_BODY });
    }
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    for (field, want) in [
        ("kind", kind.to_owned()),
        ("apiVersion", api_version.to_owned()),
    ] {
        match map.get(field).and_then(Value::as_str) {
            None | Some("") => {
                map.insert(field.into(), Value::String(want));
            }
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::BadRequest(format!(
                "the {field} of the object ({got}) does not match the resource ({want}) of the URL"
            )))
            }
        }
    }
    Ok(obj)
}

/// Make the object's namespace the URL's (namespaced) or remove it (cluster-scoped).
fn check_namespace(action: &Action, obj: &mut Value) -> Result<Option<String>, ApiError> {
    let meta = meta::metadata(obj);
    if !action.resource.namespaced {
        meta.remove("namespace");
        return Ok(None);
    }
    let url_ns = action.namespace.clone().unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::BadRequest(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({url_ns})"
        ))),
        _ => {
            meta.insert("namespace".into(), Value::String(url_ns.clone()));
            Ok(Some(url_ns))
        }
    }
}

/// The finalizer `DeleteOptions.propagationPolicy` asks for: `foregroundDeletion` for
/// `Foreground`, `orphan` for `Orphan` (or the older `orphanDependents: true`), none for
/// `Background` (the default: the garbage collector deletes dependents afterwards).
fn propagation_finalizer(body: &[u8]) -> Result<Option<&'static str>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let opts: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("DeleteOptions is not valid JSON: {e}")))?;
    match opts["propagationPolicy"].as_str() {
        Some("Foreground") => Ok(Some("foregroundDeletion")),
        Some("Orphan") => Ok(Some("orphan")),
        Some("Background") => Ok(None),
        None | Some("") if opts["orphanDependents"] == Value::Bool(true) => Ok(Some("orphan")),
        None | Some("") => Ok(None),
        Some(other) => Err(ApiError::BadRequest(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

/// The grace period a deletion asks for: `DeleteOptions.gracePeriodSeconds` in the body, else
/// the `gracePeriodSeconds` query parameter.
fn requested_grace(action: &Action, body: &[u8]) -> Result<Option<i64>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(action.options.grace_period_seconds);
    }
    let opts: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("DeleteOptions is not valid JSON: {e}")))?;
    match &opts["gracePeriodSeconds"] {
        Value::Null => Ok(action.options.grace_period_seconds),
        v => v.as_i64().map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "DeleteOptions.gracePeriodSeconds: expected a number of seconds, got {v}"
            ))
        }),
    }
}

/// How long `obj` has to shut down before it is gone: only pods have a grace period
/// ([`super::pods::grace_period`]); everything else goes at once (or when its finalizers do).
pub(super) fn grace_period(resource: &Resource, obj: &Value, asked: Option<i64>) -> i64 {
    if resource.kind == "Pod" && resource.group.is_empty() {
        super::pods::grace_period(obj, asked)
    } else {
        0
    }
}

/// `DeleteOptions.preconditions` (uid, resourceVersion).
fn check_preconditions(
    body: &[u8],
    obj: &Value,
    who: &crate::error::Subject,
) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let opts: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("DeleteOptions is not valid JSON: {e}")))?;
    for field in ["uid", "resourceVersion"] {
        if let Some(want) = opts["preconditions"][field].as_str() {
            let have = meta_str(obj, field);
            if want != have {
                return Err(ApiError::Conflict {
                    subject: who.clone(),
                    message: format!(
                        "Precondition failed: {field} in precondition: {want}, {field} in object meta: {have}"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// True when anything outside `metadata` and `status` differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// kube-apiserver's DefaultTolerationSeconds: a new pod tolerates its node being not ready or
/// unreachable for 300 s (then the node lifecycle controller evicts it), unless it says
/// otherwise.
fn default_tolerations(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tolerations.iter().any(|t| {
            let effect_ok =
                t["effect"].is_null() || t["effect"] == "" || t["effect"] == "NoExecute";
            let key_ok = t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists");
            effect_ok && key_ok
        });
        if !covered {
            tolerations.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300}),
            );
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
}
