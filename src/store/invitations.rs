//! Invitations and join requests: an invitation names an email and a role
//! and is consumed once; a join request (made through a team's invite link)
//! waits for an admin's decision. Same portable SQL as the rest of the store.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{map_unique, Store, StoreError};
use crate::domain::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub team_id: String,
    pub email: String,
    pub role: Role,
    pub token_hash: String,
    pub expires_at: i64,
    pub created_by: String,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub id: String,
    pub team_id: String,
    pub user_id: String,
    pub email: String,
    pub status: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
}

fn invitation_from_row(row: &AnyRow) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        email: row.try_get("email")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        token_hash: row.try_get("token_hash")?,
        expires_at: row.try_get("expires_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        accepted_at: row.try_get("accepted_at")?,
        accepted_by: row.try_get("accepted_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn join_request_from_row(row: &AnyRow) -> Result<JoinRequest, StoreError> {
    Ok(JoinRequest {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

const INVITATION_COLUMNS: &str = "id, team_id, email, role, token_hash, expires_at, created_by, created_at, accepted_at, accepted_by, revoked_at";

impl Store {
    // === Invitations ===

    pub async fn insert_invitation(&self, invitation: &Invitation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invitations (id, team_id, email, role, token_hash, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&invitation.id)
        .bind(&invitation.team_id)
        .bind(&invitation.email)
        .bind(invitation.role.as_str())
        .bind(&invitation.token_hash)
        .bind(invitation.expires_at)
        .bind(&invitation.created_by)
        .bind(invitation.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn invitations(&self, team_id: &str) -> Result<Vec<Invitation>, StoreError> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 ORDER BY created_at DESC, id");
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invitation_from_row).collect()
    }

    pub async fn invitation(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql =
            format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(team_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| invitation_from_row(&r)).transpose()
    }

    pub async fn invitation_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| invitation_from_row(&r)).transpose()
    }

    pub async fn revoke_invitation(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND accepted_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes the pending invitations one person created in a team (they
    /// were removed or lost the admin role); returns how many.
    pub async fn revoke_invitations_by(
        &self,
        team_id: &str,
        created_by: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 \
             WHERE team_id = $2 AND created_by = $3 AND revoked_at IS NULL AND accepted_at IS NULL",
        )
        .bind(at)
        .bind(team_id)
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Revokes the pending invitations to a team addressed to `email` (the
    /// person joined another way: a later accept must not re-admit them
    /// after they leave, with a fresh limit or another role).
    pub async fn revoke_invitations_to(
        &self,
        team_id: &str,
        email: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 \
             WHERE team_id = $2 AND LOWER(email) = LOWER($3) AND revoked_at IS NULL AND accepted_at IS NULL",
        )
        .bind(at)
        .bind(team_id)
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Closes a user's pending join requests to a team (they joined, or
    /// left); returns how many.
    pub async fn close_join_requests(
        &self,
        team_id: &str,
        user_id: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE join_requests SET status = 'closed', decided_by = 'system', decided_at = $1 \
             WHERE team_id = $2 AND user_id = $3 AND status = 'pending'",
        )
        .bind(at)
        .bind(team_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Marks an invitation used, once: a second accept (even a concurrent
    /// one) changes nothing and returns false.
    pub async fn consume_invitation(
        &self,
        id: &str,
        user_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
             WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(user_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // === Join requests ===

    pub async fn pending_join_request(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<JoinRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id \
             WHERE j.team_id = $1 AND j.user_id = $2 AND j.status = 'pending'",
        )
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| join_request_from_row(&r)).transpose()
    }

    pub async fn insert_join_request(&self, request: &JoinRequest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_requests (id, team_id, user_id, status, created_at) VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(&request.id)
        .bind(&request.team_id)
        .bind(&request.user_id)
        .bind(request.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn join_requests(&self, team_id: &str) -> Result<Vec<JoinRequest>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id \
             WHERE j.team_id = $1 ORDER BY j.created_at DESC, j.id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(join_request_from_row).collect()
    }

    pub async fn join_request(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<JoinRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id WHERE j.team_id = $1 AND j.id = $2",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| join_request_from_row(&r)).transpose()
    }

    /// Decides a pending request, once; returns false if it was not pending.
    pub async fn decide_join_request(
        &self,
        id: &str,
        status: &str,
        by: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE join_requests SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND status = 'pending'",
        )
        .bind(status)
        .bind(by)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn pending_join_request_count(&self, team_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM join_requests WHERE team_id = $1 AND status = 'pending'",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
