//! Teams and their members: create, update, delete and transfer a team,
//! look a team up by its invite link, and add, update, list and remove
//! members. Same portable SQL as the rest of the store.
//!
//! The other team concerns live beside this file: invitations and join
//! requests in `invitations`, usage reports in `reports`, the audit trail
//! and limit events in `audit`. The types of theirs named through
//! `store::teams::` paths are re-exported here.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{Enforcement, Role};
use crate::money::Money;

pub use super::audit::LimitEvent;
pub use super::reports::{day_of, GroupBy, UsageGroup, UsageParts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub default_monthly_limit: Option<Money>,
    /// `hard` or `soft`.
    pub enforcement: Enforcement,
    pub restricted_models: Vec<String>,
    pub invite_link_hash: Option<String>,
    pub created_at: i64,
    /// Below this owner's balance the team raises `balance.low`.
    pub low_balance: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub team_id: String,
    pub user_id: String,
    pub email: String,
    /// `owner`, `admin` or `member`.
    pub role: Role,
    pub monthly_limit: Option<Money>,
    pub joined_at: i64,
}

const TEAM_COLUMNS: &str = "id, name, owner_id, default_monthly_limit_nano, enforcement, restricted_models, invite_link_hash, created_at, low_balance_nano";

fn team_from_row(row: &AnyRow) -> Result<Team, StoreError> {
    let restricted: String = row.try_get("restricted_models")?;
    Ok(Team {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        default_monthly_limit: row
            .try_get::<Option<i64>, _>("default_monthly_limit_nano")?
            .map(Money::from_nano),
        enforcement: Enforcement::parse(&row.try_get::<String, _>("enforcement")?)?,
        restricted_models: serde_json::from_str(&restricted).unwrap_or_default(),
        invite_link_hash: row.try_get("invite_link_hash")?,
        created_at: row.try_get("created_at")?,
        low_balance: row
            .try_get::<Option<i64>, _>("low_balance_nano")?
            .map(Money::from_nano),
    })
}

fn member_from_row(row: &AnyRow) -> Result<Member, StoreError> {
    Ok(Member {
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        monthly_limit: row
            .try_get::<Option<i64>, _>("monthly_limit_nano")?
            .map(Money::from_nano),
        joined_at: row.try_get("joined_at")?,
    })
}

const MEMBER_SELECT: &str =
    "SELECT m.team_id, m.user_id, u.email, m.role, m.monthly_limit_nano, m.joined_at \
     FROM team_members m JOIN users u ON u.id = m.user_id";

impl Store {
    // === Teams ===

    /// Creates a team with its owner as the first member, atomically.
    pub async fn create_team(&self, team: &Team) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO teams (id, name, owner_id, default_monthly_limit_nano, enforcement, restricted_models, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&team.id)
        .bind(&team.name)
        .bind(&team.owner_id)
        .bind(team.default_monthly_limit.map(Money::nano))
        .bind(team.enforcement.as_str())
        .bind(serde_json::to_string(&team.restricted_models).unwrap_or_else(|_| "[]".into()))
        .bind(team.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(&team.id)
        .bind(&team.owner_id)
        .bind(team.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A team that is not deleted.
    pub async fn team(&self, id: &str) -> Result<Option<Team>, StoreError> {
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1 AND deleted_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| team_from_row(&r)).transpose()
    }

    pub async fn all_teams(&self) -> Result<Vec<Team>, StoreError> {
        let sql = format!(
            "SELECT {TEAM_COLUMNS} FROM teams WHERE deleted_at IS NULL ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(team_from_row).collect()
    }

    /// Saves name, default limit, enforcement and restrictions.
    /// Saves a team's settings; a changed low-balance threshold is armed
    /// again (it fires at the next settlement below it).
    pub async fn update_team(&self, team: &Team) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE teams SET name = $1, default_monthly_limit_nano = $2, enforcement = $3, restricted_models = $4, \
             low_balance_fired_at = CASE WHEN low_balance_nano IS NOT DISTINCT FROM $5 THEN low_balance_fired_at ELSE NULL END, \
             low_balance_nano = $5 \
             WHERE id = $6 AND deleted_at IS NULL",
        )
        .bind(&team.name)
        .bind(team.default_monthly_limit.map(Money::nano))
        .bind(team.enforcement.as_str())
        .bind(serde_json::to_string(&team.restricted_models).unwrap_or_else(|_| "[]".into()))
        .bind(team.low_balance.map(Money::nano))
        .bind(&team.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_team(&self, id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE teams SET deleted_at = $1, invite_link_hash = NULL WHERE id = $2 AND deleted_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves ownership; the old owner becomes an admin.
    pub async fn transfer_team(
        &self,
        team_id: &str,
        old_owner: &str,
        new_owner: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE teams SET owner_id = $1 WHERE id = $2")
            .bind(new_owner)
            .bind(team_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE team_members SET role = 'admin' WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(old_owner)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE team_members SET role = 'owner' WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(new_owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_invite_link(
        &self,
        team_id: &str,
        hash: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE teams SET invite_link_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn team_by_invite_link(&self, hash: &str) -> Result<Option<Team>, StoreError> {
        let sql = format!(
            "SELECT {TEAM_COLUMNS} FROM teams WHERE invite_link_hash = $1 AND deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| team_from_row(&r)).transpose()
    }

    // === Members ===

    /// An active member of a team that is not deleted.
    pub async fn member(&self, team_id: &str, user_id: &str) -> Result<Option<Member>, StoreError> {
        let sql = format!(
            "{MEMBER_SELECT} JOIN teams t ON t.id = m.team_id \
             WHERE m.team_id = $1 AND m.user_id = $2 AND m.removed_at IS NULL AND t.deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(team_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| member_from_row(&r)).transpose()
    }

    /// Whether an active member of the team has this email (any case).
    pub async fn member_with_email(&self, team_id: &str, email: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT m.user_id FROM team_members m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = $1 AND m.removed_at IS NULL AND LOWER(u.email) = LOWER($2)",
        )
        .bind(team_id)
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub async fn members(&self, team_id: &str) -> Result<Vec<Member>, StoreError> {
        let sql = format!(
            "{MEMBER_SELECT} WHERE m.team_id = $1 AND m.removed_at IS NULL ORDER BY m.joined_at, m.user_id"
        );
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(member_from_row).collect()
    }

    /// The teams a user belongs to, with the user's role.
    pub async fn teams_of_user(&self, user_id: &str) -> Result<Vec<(Team, Role)>, StoreError> {
        let sql = format!(
            "SELECT {}, m.role AS member_role FROM teams t JOIN team_members m ON m.team_id = t.id \
             WHERE m.user_id = $1 AND m.removed_at IS NULL AND t.deleted_at IS NULL ORDER BY t.created_at, t.id",
            TEAM_COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    team_from_row(r)?,
                    Role::parse(&r.try_get::<String, _>("member_role")?)?,
                ))
            })
            .collect()
    }

    /// Adds a member, or brings a removed one back with a fresh role and no
    /// override.
    pub async fn add_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role, joined_at = excluded.joined_at, \
             monthly_limit_nano = NULL, removed_at = NULL",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        Self::record_member_event_on(&mut tx, team_id, user_id, true, role.as_str(), at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        monthly_limit: Option<Money>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE team_members SET role = $1, monthly_limit_nano = $2 \
             WHERE team_id = $3 AND user_id = $4 AND removed_at IS NULL",
        )
        .bind(role.as_str())
        .bind(monthly_limit.map(Money::nano))
        .bind(team_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_member(
        &self,
        team_id: &str,
        user_id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write first (SQLite: a read before it could fail the upgrade).
        let role: Option<String> = sqlx::query(
            "UPDATE team_members SET removed_at = $1 WHERE team_id = $2 AND user_id = $3 \
             AND removed_at IS NULL RETURNING role",
        )
        .bind(at)
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("role"))
        .transpose()?;
        let removed = u64::from(role.is_some());
        if removed == 1 {
            let role = role.unwrap_or_default();
            Self::record_member_event_on(&mut tx, team_id, user_id, false, &role, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
