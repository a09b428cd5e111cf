//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` gets, as its `rules`, the
//! rules of every ClusterRole its selectors match, as Kubernetes' aggregation controller
//! writes them, so `kubectl describe clusterrole admin` shows what `admin` grants and a chart's
//! `aggregate-to-edit` role extends `edit` visibly. (Authorization does not wait for this: the
//! API server resolves aggregation itself.)

use cairn_apiserver::selector::LabelSelector;
use serde_json::{json, Value};

use crate::client::{Client, Res};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const CLUSTER_ROLES: Res = Res::named("rbac.authorization.k8s.io", "clusterroles");

pub struct ClusterRoleAggregation;

impl Controller for ClusterRoleAggregation {
    fn name(&self) -> &'static str {
        "clusterrole-aggregation-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        // Any ClusterRole may feed any aggregated one: one key for all.
        vec![Watched {
            resource: CLUSTER_ROLES,
            keys: |_| vec![Key::new("", "*")],
        }]
    }

    fn reconcile(&self, client: &Client, _key: &Key) -> Result<Outcome, String> {
        let roles = client.list(CLUSTER_ROLES, "").map_err(|e| e.to_string())?;
        for role in &roles {
            let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
                continue;
            };
            let selectors: Vec<LabelSelector> = selectors
                .iter()
                .filter_map(|s| LabelSelector::from_json(s).ok())
                .filter(|s| !s.0.is_empty())
                .collect();
            let mut rules: Vec<Value> = Vec::new();
            for other in &roles {
                if other["metadata"]["name"] == role["metadata"]["name"]
                    || !selectors.iter().any(|s| s.matches_object(other))
                {
                    continue;
                }
                for rule in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
            if role["rules"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                == rules.as_slice()
            {
                continue;
            }
            let mut updated = role.clone();
            updated["rules"] = json!(rules);
            match client.update(CLUSTER_ROLES, "", &updated) {
                Ok(_) => {}
                // Changed meanwhile: the watch brings us back.
                Err(
                    cairn_apiserver::ApiError::Conflict { .. }
                    | cairn_apiserver::ApiError::NotFound(_),
                ) => {}
                Err(e) => {
                    return Err(format!(
                        "aggregating clusterrole {}: {e}",
                        role["metadata"]["name"].as_str().unwrap_or_default()
                    ))
                }
            }
        }
        Ok(Outcome::Done)
    }
}
