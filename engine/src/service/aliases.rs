//! Aliases: friendly names that point at a key in the same account and region. Re-pointing an
//! alias is how a manual rotation is done.

use std::sync::Arc;

use kubekms_proto::ops::{
    AliasListEntry, AliasTargetRequest, DeleteAliasRequest, Empty, ListAliasesRequest,
    ListAliasesResponse,
};
use kubekms_proto::{Action, Timestamp};

use super::checks;
use super::{attempt, Aliases, Caller, KeyEntry, Kms, Outcome, Refused};
use crate::error::{KmsError, Result};
use crate::record::AliasRecord;

impl Kms {
    /// The request of CreateAlias and UpdateAlias, checked: the alias name and the key it is to
    /// point at, authorized for `action`.
    fn alias_target(
        &self,
        caller: &Caller,
        action: Action,
        req: &AliasTargetRequest,
    ) -> Result<Arc<KeyEntry>, Refused> {
        validate_alias_name(&req.alias_name)?;
        let target = self.authorized(caller, action, &req.target_key_id, Aliases::Refused, None)?;
        self.require_not_pending_deletion(&target.record)
            .map_err(|error| Refused {
                error,
                key: Some(target.arn.clone()),
            })?;
        Ok(target)
    }

    pub async fn create_alias(&self, caller: &Caller, req: AliasTargetRequest) -> Outcome<Empty> {
        let target = attempt!(self.alias_target(caller, Action::CreateAlias, &req));
        let result = async {
            let name = req.alias_name;
            let _guard = self.alias_lock.lock().await;
            if self.tables.read().alias(&caller.scope, &name).is_some() {
                return Err(KmsError::AlreadyExists(format!(
                    "An alias with the name {} already exists",
                    caller.scope.alias_arn(&name)
                )));
            }
            let now = self.now();
            let alias = AliasRecord {
                scope: caller.scope.clone(),
                name,
                target_key_id: target.record.key_id,
                created: now,
                updated: now,
            };
            self.store.put_alias(&alias).await?;
            self.tables.write().insert_alias(alias);
            Ok(Empty {})
        }
        .await;
        Outcome::on(&target, result)
    }

    pub async fn update_alias(&self, caller: &Caller, req: AliasTargetRequest) -> Outcome<Empty> {
        let target = attempt!(self.alias_target(caller, Action::UpdateAlias, &req));
        let result = async {
            let _guard = self.alias_lock.lock().await;
            let mut alias = self.existing_alias(caller, Action::UpdateAlias, &req.alias_name)?;
            // As in AWS, moving an alias needs kms:UpdateAlias on the key it leaves as well. A
            // refusal names the alias, as for an alias that does not exist.
            let current_id = alias.target_key_id.uuid();
            if let Some(current) = self.by_uuid_any(caller, &current_id) {
                self.authorize_named(
                    caller,
                    Action::UpdateAlias,
                    &current,
                    Some(&req.alias_name),
                    None,
                )
                .map_err(Refused::into_error)?;
            }
            // AWS only lets an alias move between keys of the same type and usage, so code
            // that uses the alias keeps working.
            if let Some(current) = self.by_uuid(caller, &current_id) {
                let (a, b) = (&current.record, &target.record);
                if a.spec != b.spec || a.usage != b.usage {
                    return Err(KmsError::validation(format!(
                        "The alias can only point to a key with the same key spec and usage ({} {})",
                        a.spec, a.usage
                    )));
                }
            }
            alias.target_key_id = target.record.key_id;
            alias.updated = self.now();
            self.store.put_alias(&alias).await?;
            self.tables.write().insert_alias(alias);
            Ok(Empty {})
        }
        .await;
        Outcome::on(&target, result)
    }

    pub async fn delete_alias(&self, caller: &Caller, req: DeleteAliasRequest) -> Outcome<Empty> {
        attempt!(validate_alias_name(&req.alias_name));
        let _guard = self.alias_lock.lock().await;
        let alias = attempt!(self.existing_alias(caller, Action::DeleteAlias, &req.alias_name));
        let arn: Arc<str> = caller.scope.key_arn(alias.target_key_id).into();
        let result = async {
            // The alias's key is the one a policy speaks of (also past its deletion date, until
            // due work destroys it and its aliases with it).
            if let Some(target) = self.by_uuid_any(caller, &alias.target_key_id.uuid()) {
                self.authorize_named(
                    caller,
                    Action::DeleteAlias,
                    &target,
                    Some(&req.alias_name),
                    None,
                )
                .map_err(Refused::into_error)?;
            }
            self.store.delete_alias(&caller.scope, &alias.name).await?;
            self.tables.write().remove_alias(&caller.scope, &alias.name);
            Ok(Empty {})
        }
        .await;
        Outcome {
            result,
            keys: vec![arn],
        }
    }

    /// The caller's alias `name`, for UpdateAlias and DeleteAlias (under the alias lock); an
    /// alias that does not exist reads as the authorization hook says for `action`.
    fn existing_alias(&self, caller: &Caller, action: Action, name: &str) -> Result<AliasRecord> {
        self.tables
            .read()
            .alias(&caller.scope, name)
            .cloned()
            .ok_or_else(|| {
                let missing = KmsError::NotFound(format!(
                    "Alias {} is not found.",
                    caller.scope.alias_arn(name)
                ));
                self.hidden(caller, action, name, missing)
            })
    }

    pub async fn list_aliases(
        &self,
        caller: &Caller,
        req: ListAliasesRequest,
    ) -> Outcome<ListAliasesResponse> {
        let result = (|| {
            self.authorize_keyless(caller, Action::ListAliases)?;
            let filter = match &req.key_id {
                Some(id) => {
                    let entry = self
                        .resolve(caller, id, Aliases::Refused)
                        .map_err(|e| self.absent(caller, Action::ListAliases, id, e))?;
                    if !self.lists(caller, &entry) {
                        let hidden = KmsError::NotFound(format!("Key '{id}' does not exist"));
                        return Err(self.absent(caller, Action::ListAliases, id, hidden));
                    }
                    Some(entry.record.key_id)
                }
                None => None,
            };
            let tables = self.tables.read();
            let mut items: Vec<AliasListEntry> = tables
                .scope_aliases(&caller.scope)
                .filter(|a| filter.as_ref().is_none_or(|f| &a.target_key_id == f))
                // Only aliases of keys the caller may see.
                .filter(|a| {
                    filter.is_some()
                        || tables
                            .keys
                            .get(&a.target_key_id.uuid())
                            .is_some_and(|e| self.lists(caller, e))
                })
                .map(|a| AliasListEntry {
                    alias_arn: caller.scope.alias_arn(&a.name),
                    alias_name: a.name.clone(),
                    target_key_id: a.target_key_id.to_string(),
                    creation_date: Timestamp(a.created),
                    last_updated_date: Timestamp(a.updated),
                })
                .collect();
            items.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
            let (aliases, next_marker) =
                checks::paginate(items, req.limit, req.marker.as_deref(), 100, 1000, |i| {
                    i.alias_name.clone()
                })?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })();
        Outcome::keyless(result)
    }
}

/// `alias/` followed by letters, digits, `/`, `_` and `-`; the `alias/aws/` prefix is AWS's own.
fn validate_alias_name(name: &str) -> Result<()> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(KmsError::validation(
            "Alias must start with the prefix \"alias/\"",
        ));
    };
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
    {
        return Err(KmsError::validation(
            "1 validation error detected: Value at 'aliasName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$",
        ));
    }
    if rest.starts_with("aws/") {
        return Err(KmsError::InvalidAliasName(
            "Aliases that begin with alias/aws/ are reserved".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_alias_name;

    #[test]
    fn alias_names_follow_aws_rules() {
        assert!(validate_alias_name("alias/team-a/orders_key").is_ok());
        for bad in ["orders", "alias/", "alias/has space", "alias/ünï"] {
            assert_eq!(
                validate_alias_name(bad).err().unwrap().aws_type(),
                "ValidationException",
                "{bad}"
            );
        }
        assert!(validate_alias_name("alias/aws/s3").is_err());
    }
}
