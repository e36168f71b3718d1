//! Helpers the e2e test files share: conditions, Key status waits, events and AWS error codes.
//!
//! Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::Result;
use aws_sdk_kms::error::ProvideErrorMetadata;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kubekms_crds::{Key, KeyStatus};
use kubekms_e2e::{wait_for, TestEnv};

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
}

pub fn is_ready(conditions: &[Condition]) -> bool {
    is_true(conditions, "Ready")
}

pub fn state_is(status: &KeyStatus, state: &str) -> bool {
    status.state.is_some_and(|s| s.as_str() == state)
}

/// Waits until Key `name` has a status for the current generation for which `check` holds;
/// returns that status.
pub async fn wait_key(
    env: &TestEnv,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&KeyStatus) -> bool,
) -> Result<KeyStatus> {
    let api = env.api::<Key>();
    let check = &check;
    wait_for(&format!("Key {name}: {what}"), timeout, || {
        let api = api.clone();
        async move {
            let Some(key) = api.get_opt(name).await? else {
                return Ok(None);
            };
            Ok(key
                .status
                .filter(|s| s.observed_generation == key.metadata.generation && check(s)))
        }
    })
    .await
}

/// Waits until Key `name` is Ready with an engine key; returns its key id and ARN.
pub async fn ready_key_ids(
    env: &TestEnv,
    name: &str,
    timeout: Duration,
) -> Result<(String, String)> {
    wait_for(&format!("Key {name} Ready"), timeout, || async {
        let key = env.api::<Key>().get(name).await?;
        let Some(s) = key.status else { return Ok(None) };
        let ready = is_ready(&s.conditions);
        Ok(match (ready, s.key_id, s.arn) {
            (true, Some(id), Some(arn)) => Some((id, arn)),
            _ => None,
        })
    })
    .await
}

/// Waits for an event with `reason` about the `kind` object `name` in the test namespace.
///
/// The operator writes events from a background queue after the status it reports, so an
/// event can trail the status a test just saw; checking once would race it.
pub async fn wait_event(env: &TestEnv, kind: &str, name: &str, reason: &str) -> Result<Event> {
    let api = env.api::<Event>();
    wait_for(
        &format!("a {reason} event for {kind} {name}"),
        Duration::from_secs(15),
        || {
            let api = api.clone();
            async move {
                Ok(api
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .find(|e| {
                        e.involved_object.kind.as_deref() == Some(kind)
                            && e.involved_object.name.as_deref() == Some(name)
                            && e.reason.as_deref() == Some(reason)
                    }))
            }
        },
    )
    .await
}

/// The AWS error code of a call that must fail.
pub fn error_code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
) -> String {
    match result {
        Ok(v) => panic!("the call succeeded: {v:?}"),
        Err(e) => e
            .code()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("(no code: {e:?})")),
    }
}
