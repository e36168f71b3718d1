//! Aliases: friendly names that point at a key in the same account and region. Re-pointing an
//! alias is how a manual rotation is done.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::keys::page_response;
use super::wire::{self, decode};
use super::{KeyEntry, Kms, RequestContext};
use crate::clock::to_epoch_seconds;
use crate::error::{KmsError, Result};
use crate::record::AliasRecord;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasTargetRequest {
    alias_name: String,
    target_key_id: String,
}

impl Kms {
    /// The request of CreateAlias and UpdateAlias, checked: the alias name and the key it is to
    /// point at.
    fn alias_target(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<(String, Arc<KeyEntry>)> {
        let req: AliasTargetRequest = decode(body)?;
        validate_alias_name(&req.alias_name)?;
        let target = self.resolve_touched(ctx, &req.target_key_id, false, touched)?;
        self.require_not_pending_deletion(&target.record)?;
        Ok((req.alias_name, target))
    }

    pub(super) async fn create_alias(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let (name, target) = self.alias_target(ctx, body, touched)?;
        let _guard = self.alias_lock.lock().await;
        if self.tables.read().alias(&ctx.scope, &name).is_some() {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                ctx.scope.alias_arn(&name)
            )));
        }
        let now = self.now();
        let alias = AliasRecord {
            scope: ctx.scope.clone(),
            name,
            target_key_id: target.record.key_id.clone(),
            created: now,
            updated: now,
        };
        self.store.put_alias(&alias).await?;
        self.tables.write().insert_alias(alias);
        Ok(b"{}".to_vec())
    }

    pub(super) async fn update_alias(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let (name, target) = self.alias_target(ctx, body, touched)?;
        let _guard = self.alias_lock.lock().await;
        let mut alias = self.existing_alias(ctx, &name)?;
        // AWS only lets an alias move between keys of the same type and usage, so code
        // that uses the alias keeps working.
        if let Some(current) = self.by_uuid(ctx, &super::parse_uuid(&alias.target_key_id)?) {
            let (a, b) = (&current.record, &target.record);
            if a.spec != b.spec || a.usage != b.usage {
                return Err(KmsError::validation(format!(
                    "The alias can only point to a key with the same key spec and usage ({} {})",
                    a.spec, a.usage
                )));
            }
        }
        alias.target_key_id = target.record.key_id.clone();
        alias.updated = self.now();
        self.store.put_alias(&alias).await?;
        self.tables.write().insert_alias(alias);
        Ok(b"{}".to_vec())
    }

    pub(super) async fn delete_alias(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            alias_name: String,
        }
        let req: Req = decode(body)?;
        validate_alias_name(&req.alias_name)?;
        let _guard = self.alias_lock.lock().await;
        let alias = self.existing_alias(ctx, &req.alias_name)?;
        *touched = Some(ctx.scope.key_arn(&alias.target_key_id));
        self.store.delete_alias(&ctx.scope, &alias.name).await?;
        self.tables.write().remove_alias(&ctx.scope, &alias.name);
        Ok(b"{}".to_vec())
    }

    /// The caller's alias `name`, for UpdateAlias and DeleteAlias (under the alias lock).
    fn existing_alias(&self, ctx: &RequestContext, name: &str) -> Result<AliasRecord> {
        self.tables
            .read()
            .alias(&ctx.scope, name)
            .cloned()
            .ok_or_else(|| {
                KmsError::NotFound(format!("Alias {} is not found.", ctx.scope.alias_arn(name)))
            })
    }

    pub(super) fn list_aliases(&self, ctx: &RequestContext, body: &[u8]) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: Option<String>,
            limit: Option<i64>,
            marker: Option<String>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Item {
            alias_name: String,
            alias_arn: String,
            target_key_id: String,
            creation_date: f64,
            last_updated_date: f64,
        }
        let req: Req = decode(body)?;
        let filter = match &req.key_id {
            Some(id) => Some(self.resolve(ctx, id, false)?.record.key_id.clone()),
            None => None,
        };
        let mut items: Vec<Item> = self
            .tables
            .read()
            .scope_aliases(&ctx.scope)
            .filter(|a| filter.as_ref().is_none_or(|f| &a.target_key_id == f))
            .map(|a| Item {
                alias_arn: ctx.scope.alias_arn(&a.name),
                alias_name: a.name.clone(),
                target_key_id: a.target_key_id.clone(),
                creation_date: to_epoch_seconds(a.created),
                last_updated_date: to_epoch_seconds(a.updated),
            })
            .collect();
        items.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
        let (page, next) =
            wire::paginate(items, req.limit, req.marker.as_deref(), 100, 1000, |i| {
                i.alias_name.clone()
            })?;
        wire::encode(&page_response("Aliases", page, next))
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
