//! Usage reports over the ledger: a member's spend (also on a locked
//! connection), every member's spend, the grouped team and personal
//! reports and the daily split, and `day_of`. A range is read in parts
//! ([`Span`]): whole UTC days from the rollups (`usage_daily`, see
//! `rollups.rs`), a partial first or last day from `usage_rows`; the parts'
//! groups are summed by key. Every query is assembled by one builder,
//! `UsageQuery`: `SELECT <keys>, <sums> FROM <table> r <join>
//! WHERE <filters> GROUP BY <group>`, with its binds
//! numbered in the order the filters were added.

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::rollups::{self, Part, Span};
use super::{Store, StoreError};
use crate::money::Money;

/// One group of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageGroup {
    pub key: String,
    pub label: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano: i64,
    /// The parts beyond plain tokens, in the order the CSV gives them.
    pub parts: UsageParts,
}

/// The parts of a cost beyond plain tokens, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageParts {
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub audio_input_tokens: i64,
    pub audio_output_tokens: i64,
    pub web_search_calls: i64,
    pub web_fetch_calls: i64,
    pub code_execution_calls: i64,
    pub priority_tier_requests: i64,
    pub flex_tier_requests: i64,
    pub long_context_requests: i64,
}

impl UsageParts {
    /// Names and values, in column order.
    pub fn columns(&self) -> [(&'static str, i64); 10] {
        [
            ("cache_write_tokens", self.cache_write_tokens),
            ("cache_write_1h_tokens", self.cache_write_1h_tokens),
            ("audio_input_tokens", self.audio_input_tokens),
            ("audio_output_tokens", self.audio_output_tokens),
            ("web_search_calls", self.web_search_calls),
            ("web_fetch_calls", self.web_fetch_calls),
            ("code_execution_calls", self.code_execution_calls),
            ("priority_tier_requests", self.priority_tier_requests),
            ("flex_tier_requests", self.flex_tier_requests),
            ("long_context_requests", self.long_context_requests),
        ]
    }

    fn add(&mut self, other: &UsageParts) {
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_write_1h_tokens += other.cache_write_1h_tokens;
        self.audio_input_tokens += other.audio_input_tokens;
        self.audio_output_tokens += other.audio_output_tokens;
        self.web_search_calls += other.web_search_calls;
        self.web_fetch_calls += other.web_fetch_calls;
        self.code_execution_calls += other.code_execution_calls;
        self.priority_tier_requests += other.priority_tier_requests;
        self.flex_tier_requests += other.flex_tier_requests;
        self.long_context_requests += other.long_context_requests;
    }

    fn sub(&mut self, other: &UsageParts) {
        self.cache_write_tokens -= other.cache_write_tokens;
        self.cache_write_1h_tokens -= other.cache_write_1h_tokens;
        self.audio_input_tokens -= other.audio_input_tokens;
        self.audio_output_tokens -= other.audio_output_tokens;
        self.web_search_calls -= other.web_search_calls;
        self.web_fetch_calls -= other.web_fetch_calls;
        self.code_execution_calls -= other.code_execution_calls;
        self.priority_tier_requests -= other.priority_tier_requests;
        self.flex_tier_requests -= other.flex_tier_requests;
        self.long_context_requests -= other.long_context_requests;
    }

    fn from_sums(r: &sqlx::any::AnyRow) -> Result<UsageParts, sqlx::Error> {
        Ok(UsageParts {
            cache_write_tokens: r.try_get("cache_write_tokens")?,
            cache_write_1h_tokens: r.try_get("cache_write_1h_tokens")?,
            audio_input_tokens: r.try_get("audio_input_tokens")?,
            audio_output_tokens: r.try_get("audio_output_tokens")?,
            web_search_calls: r.try_get("web_search_calls")?,
            web_fetch_calls: r.try_get("web_fetch_calls")?,
            code_execution_calls: r.try_get("code_execution_calls")?,
            priority_tier_requests: r.try_get("priority_tier_requests")?,
            flex_tier_requests: r.try_get("flex_tier_requests")?,
            long_context_requests: r.try_get("long_context_requests")?,
        })
    }
}

impl UsageGroup {
    /// Adds another group's counts and cost to this one.
    pub fn add(&mut self, other: &UsageGroup) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost_nano += other.cost_nano;
        self.parts.add(&other.parts);
    }

    /// Takes another group's counts and cost from this one.
    pub fn sub(&mut self, other: &UsageGroup) {
        self.requests -= other.requests;
        self.input_tokens -= other.input_tokens;
        self.output_tokens -= other.output_tokens;
        self.cached_tokens -= other.cached_tokens;
        self.reasoning_tokens -= other.reasoning_tokens;
        self.cost_nano -= other.cost_nano;
        self.parts.sub(&other.parts);
    }

    /// Reads the sums of `USAGE_SUMS` from a report row.
    fn from_sums(
        r: &sqlx::any::AnyRow,
        key: String,
        label: String,
    ) -> Result<UsageGroup, sqlx::Error> {
        Ok(UsageGroup {
            key,
            label,
            requests: r.try_get("requests")?,
            input_tokens: r.try_get("input_tokens")?,
            output_tokens: r.try_get("output_tokens")?,
            cached_tokens: r.try_get("cached_tokens")?,
            reasoning_tokens: r.try_get("reasoning_tokens")?,
            cost_nano: r.try_get("cost_nano")?,
            parts: UsageParts::from_sums(r)?,
        })
    }
}

/// The sums every usage report selects.
const USAGE_SUMS: &str = "COUNT(*) AS requests, \
     CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(COALESCE(SUM(r.cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(r.reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
     CAST(COALESCE(SUM(r.cost_nano), 0) AS BIGINT) AS cost_nano, \
     CAST(COALESCE(SUM(r.cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
     CAST(COALESCE(SUM(r.cache_write_1h_tokens), 0) AS BIGINT) AS cache_write_1h_tokens, \
     CAST(COALESCE(SUM(r.audio_input_tokens), 0) AS BIGINT) AS audio_input_tokens, \
     CAST(COALESCE(SUM(r.audio_output_tokens), 0) AS BIGINT) AS audio_output_tokens, \
     CAST(COALESCE(SUM(r.web_search_calls), 0) AS BIGINT) AS web_search_calls, \
     CAST(COALESCE(SUM(r.web_fetch_calls), 0) AS BIGINT) AS web_fetch_calls, \
     CAST(COALESCE(SUM(r.code_execution_calls), 0) AS BIGINT) AS code_execution_calls, \
     CAST(COALESCE(SUM(CASE WHEN r.service_tier = 'priority' THEN 1 ELSE 0 END), 0) AS BIGINT) AS priority_tier_requests, \
     CAST(COALESCE(SUM(CASE WHEN r.service_tier = 'flex' THEN 1 ELSE 0 END), 0) AS BIGINT) AS flex_tier_requests, \
     CAST(COALESCE(SUM(r.long_context), 0) AS BIGINT) AS long_context_requests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Member,
    Model,
    Day,
}

/// The sum the spend queries select.
const SPEND_SUM: &str = "CAST(COALESCE(SUM(r.cost_nano), 0) AS BIGINT) AS spent";

/// The UTC day number of a row, in SQL.
const ROW_DAY: &str = "CAST(r.started_at / 86400000 AS BIGINT)";

const DAY_MS: i64 = 86_400_000;

/// A value bound to a `$N` parameter.
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// One aggregate query over `usage_rows r` or `usage_daily r`: the key
/// columns and sums it selects, an optional join, the filters with their
/// binds (`$N` numbered as they are added) and the grouping. Results are
/// ordered after the parts are summed.
struct UsageQuery<'a> {
    table: &'static str,
    keys: Vec<String>,
    sums: &'static str,
    join: &'static str,
    filters: Vec<String>,
    binds: Vec<Bind<'a>>,
    group: Vec<String>,
}

impl<'a> UsageQuery<'a> {
    fn new(sums: &'static str) -> Self {
        UsageQuery {
            table: "usage_rows",
            keys: Vec::new(),
            sums,
            join: "",
            filters: Vec::new(),
            binds: Vec::new(),
            group: Vec::new(),
        }
    }

    /// The sums of the rows whose `owner` column (`team_id`, `user_id`) is
    /// `id` in one part of a range: `sums` over rows, or their rollups.
    fn part(part: Part, owner: &str, id: &'a str, sums: &'static str) -> Self {
        match part {
            Part::Rows(from, to) => UsageQuery::new(sums)
                .filter(&format!("r.{owner} ="), Bind::Text(id))
                .filter("r.started_at >=", Bind::Int(from))
                .filter("r.started_at <", Bind::Int(to)),
            Part::Days(first, end) => {
                let mut query = UsageQuery::new(if sums == USAGE_SUMS {
                    rollups::report_sums()
                } else {
                    sums
                })
                .filter(&format!("r.{owner} ="), Bind::Text(id))
                .filter("r.day >=", Bind::Int(first))
                .filter("r.day <", Bind::Int(end));
                query.table = "usage_daily";
                query
            }
        }
    }

    /// A report of one part of a range, refusals left out (the rollups
    /// hold none).
    fn report(part: Part, owner: &str, id: &'a str) -> Self {
        let query = Self::part(part, owner, id, USAGE_SUMS);
        match part {
            Part::Rows(..) => query.condition("r.status <> 'refused'"),
            Part::Days(..) => query,
        }
    }

    /// Selects `expression AS name` before the sums.
    fn key(mut self, expression: &str, name: &str) -> Self {
        self.keys.push(format!("{expression} AS {name}"));
        self
    }

    fn join(mut self, join: &'static str) -> Self {
        self.join = join;
        self
    }

    /// Adds `<left> $N`, binding `value` as the next parameter.
    fn filter(mut self, left: &str, value: Bind<'a>) -> Self {
        self.binds.push(value);
        self.filters.push(format!("{left} ${}", self.binds.len()));
        self
    }

    /// Adds a filter without a parameter.
    fn condition(mut self, condition: &str) -> Self {
        self.filters.push(condition.to_string());
        self
    }

    fn group_by(mut self, expression: &str) -> Self {
        self.group.push(expression.to_string());
        self
    }

    fn sql(&self) -> String {
        let mut columns = self.keys.clone();
        columns.push(self.sums.to_string());
        let mut sql = format!("SELECT {} FROM {} r", columns.join(", "), self.table);
        if !self.join.is_empty() {
            sql.push(' ');
            sql.push_str(self.join);
        }
        if !self.filters.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.filters.join(" AND "));
        }
        if !self.group.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&self.group.join(", "));
        }
        sql
    }

    /// The statement `sql` (from `UsageQuery::sql`) with every bind.
    fn query<'q>(&'q self, sql: &'q str) -> Query<'q, Any, AnyArguments<'q>> {
        self.binds
            .iter()
            .fold(sqlx::query(sql), |query, bind| match *bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(number) => query.bind(number),
            })
    }
}

/// How a report's rows are grouped: the key of a ledger row and of a
/// rollup row, the join its label needs and the label (text; none for
/// days, whose key says it all).
struct Grouping {
    row_key: &'static str,
    rollup_key: &'static str,
    join: &'static str,
    label: &'static str,
    by_day: bool,
}

impl Grouping {
    fn key(&self, part: Part) -> &'static str {
        match part {
            Part::Rows(..) => self.row_key,
            Part::Days(..) => self.rollup_key,
        }
    }
}

fn grouping(group_by: GroupBy) -> Grouping {
    match group_by {
        GroupBy::Member => Grouping {
            row_key: "r.user_id",
            rollup_key: "r.user_id",
            join: "LEFT JOIN users u ON u.id = r.user_id",
            label: "MIN(u.email)",
            by_day: false,
        },
        GroupBy::Model => Grouping {
            row_key: "r.model",
            rollup_key: "r.model",
            join: "",
            label: "MIN(r.model)",
            by_day: false,
        },
        GroupBy::Day => Grouping {
            row_key: ROW_DAY,
            rollup_key: "r.day",
            join: "",
            label: "MIN('')",
            by_day: true,
        },
    }
}

/// How a person's own usage is grouped (`GET /api/me/usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MineBy {
    Day,
    Model,
    /// Who paid: personal (`key` empty) or a team (its id, labelled with
    /// its name).
    Payer,
}

/// Groups summed across a range's parts, in report order: days by number,
/// other keys as bytes.
#[derive(Default)]
struct Merged {
    groups: BTreeMap<(i64, String), UsageGroup>,
}

impl Merged {
    fn add(&mut self, order: i64, group: UsageGroup) {
        match self.groups.entry((order, group.key.clone())) {
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let held = entry.get_mut();
                held.add(&group);
                if held.label.is_empty() {
                    held.label = group.label;
                }
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(group);
            }
        }
    }
}

impl Store {
    /// One person's usage in `[from, to)`, wherever it was billed,
    /// refusals left out.
    pub async fn user_usage_report(
        &self,
        user_id: &str,
        from: i64,
        to: i64,
        by: MineBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.user_usage_report_over(&Span::of(from, to), user_id, by)
            .await
    }

    /// [`Store::user_usage_report`] over a given split of its range.
    pub async fn user_usage_report_over(
        &self,
        span: &Span,
        user_id: &str,
        by: MineBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let grouping = match by {
            MineBy::Day => grouping(GroupBy::Day),
            MineBy::Model => grouping(GroupBy::Model),
            MineBy::Payer => Grouping {
                row_key: "COALESCE(r.team_id, '')",
                rollup_key: "r.team_id",
                join: "LEFT JOIN teams t ON t.id = r.team_id",
                label: "MIN(t.name)",
                by_day: false,
            },
        };
        self.grouped(span, "user_id", user_id, &grouping).await
    }

    /// Sums the rows of `owner` = `id` over `span`, grouped.
    async fn grouped(
        &self,
        span: &Span,
        owner: &str,
        id: &str,
        grouping: &Grouping,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let mut merged = Merged::default();
        for &part in &span.parts {
            let key = grouping.key(part);
            let report = UsageQuery::report(part, owner, id)
                .key(&format!("CAST({key} AS TEXT)"), "k")
                .key(grouping.label, "label_raw")
                .join(grouping.join)
                .group_by(key);
            let sql = report.sql();
            let rows = report.query(&sql).fetch_all(&self.pool).await?;
            for r in &rows {
                let key: String = r.try_get("k")?;
                let label = if grouping.by_day {
                    String::new()
                } else {
                    r.try_get::<Option<String>, _>("label_raw")?
                        .unwrap_or_default()
                };
                let order = if grouping.by_day {
                    key.parse::<i64>().unwrap_or(i64::MAX)
                } else {
                    0
                };
                merged.add(order, UsageGroup::from_sums(r, key, label)?);
            }
        }
        Ok(merged.groups.into_values().collect())
    }

    /// A member's recorded team spend in `[from, to)`.
    pub async fn member_spend(
        &self,
        team_id: &str,
        user_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Money, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::member_spend_on(&mut conn, team_id, user_id, from, to).await
    }

    /// A member's recorded team spend on a connection (inside a counter lock).
    pub async fn member_spend_on(
        conn: &mut sqlx::AnyConnection,
        team_id: &str,
        user_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Money, StoreError> {
        let mut spent: i64 = 0;
        for part in Span::of(from, to).parts {
            let report = UsageQuery::part(part, "team_id", team_id, SPEND_SUM)
                .filter("r.user_id =", Bind::Text(user_id));
            let sql = report.sql();
            let row = report.query(&sql).fetch_one(&mut *conn).await?;
            spent = spent.saturating_add(row.try_get("spent")?);
        }
        Ok(Money::from_nano(spent))
    }

    /// Each member's recorded team spend in `[from, to)`.
    pub async fn member_spends(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, Money>, StoreError> {
        let mut spends: HashMap<String, i64> = HashMap::new();
        for part in Span::of(from, to).parts {
            let report = UsageQuery::part(part, "team_id", team_id, SPEND_SUM)
                .key("r.user_id", "user_id")
                .group_by("r.user_id");
            let sql = report.sql();
            for r in report.query(&sql).fetch_all(&self.pool).await? {
                let spent: i64 = r.try_get("spent")?;
                let held = spends.entry(r.try_get("user_id")?).or_default();
                *held = held.saturating_add(spent);
            }
        }
        Ok(spends
            .into_iter()
            .map(|(user, spent)| (user, Money::from_nano(spent)))
            .collect())
    }

    /// The usage report of a team in `[from, to)`; refusals are not counted.
    pub async fn usage_report(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.usage_report_over(&Span::of(from, to), team_id, group_by)
            .await
    }

    /// [`Store::usage_report`] over a given split of its range (the rows
    /// alone with [`Span::rows_only`]: what the rollups are tested against).
    pub async fn usage_report_over(
        &self,
        span: &Span,
        team_id: &str,
        group_by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.grouped(span, "team_id", team_id, &grouping(group_by))
            .await
    }

    /// A team's usage in `[from, to)` grouped by the value of the tag
    /// `key` (rows without it: key `""`, label `(none)`); refusals are not
    /// counted. `key` must be a valid tag key (`tags::valid_key`).
    pub async fn usage_report_by_tag(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
        key: &str,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.usage_report_by_tag_over(&Span::of(from, to), team_id, key)
            .await
    }

    /// [`Store::usage_report_by_tag`] over a given split of its range.
    pub async fn usage_report_by_tag_over(
        &self,
        span: &Span,
        team_id: &str,
        key: &str,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        if !crate::tags::valid_key(key) {
            return Ok(Vec::new());
        }
        // A valid key is [a-z0-9_.-]: safe inside a SQL literal.
        let value = if self.postgres {
            format!("COALESCE(CAST(r.tags AS json) ->> '{key}', '')")
        } else {
            format!("COALESCE(json_extract(r.tags, '$.\"{key}\"'), '')")
        };
        let mut merged = Merged::default();
        for &part in &span.parts {
            match part {
                Part::Rows(..) => {
                    let report = UsageQuery::report(part, "team_id", team_id)
                        .key(&format!("CAST({value} AS TEXT)"), "k")
                        .group_by(&value);
                    let sql = report.sql();
                    for r in report.query(&sql).fetch_all(&self.pool).await? {
                        merged.add(
                            0,
                            UsageGroup::from_sums(&r, r.try_get("k")?, String::new())?,
                        );
                    }
                }
                Part::Days(first, end) => {
                    let mut tagged = UsageQuery::new(rollups::report_sums())
                        .key("r.tag_value", "k")
                        .filter("r.team_id =", Bind::Text(team_id))
                        .condition(&format!("r.tag_key = '{key}'"))
                        .filter("r.day >=", Bind::Int(first))
                        .filter("r.day <", Bind::Int(end))
                        .group_by("r.tag_value");
                    tagged.table = "usage_daily_tags";
                    let sql = tagged.sql();
                    let mut none = {
                        let total = UsageQuery::report(part, "team_id", team_id);
                        let sql = total.sql();
                        let row = total.query(&sql).fetch_one(&self.pool).await?;
                        UsageGroup::from_sums(&row, String::new(), String::new())?
                    };
                    for r in tagged.query(&sql).fetch_all(&self.pool).await? {
                        let group = UsageGroup::from_sums(&r, r.try_get("k")?, String::new())?;
                        none.sub(&group);
                        merged.add(0, group);
                    }
                    if none != UsageGroup::default() {
                        merged.add(0, none);
                    }
                }
            }
        }
        Ok(merged
            .groups
            .into_values()
            .map(|mut group| {
                group.label = if group.key.is_empty() {
                    "(none)".into()
                } else {
                    group.key.clone()
                };
                group
            })
            .collect())
    }

    /// Daily usage split by member or by model: `(day number, group)` pairs,
    /// ordered by day then key. Each day's groups sum to that day's total.
    pub async fn usage_daily_split(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
        split: GroupBy,
    ) -> Result<Vec<(i64, UsageGroup)>, StoreError> {
        self.usage_daily_split_over(&Span::of(from, to), team_id, split)
            .await
    }

    /// [`Store::usage_daily_split`] over a given split of its range.
    pub async fn usage_daily_split_over(
        &self,
        span: &Span,
        team_id: &str,
        split: GroupBy,
    ) -> Result<Vec<(i64, UsageGroup)>, StoreError> {
        let day = grouping(GroupBy::Day);
        let grouping = match split {
            GroupBy::Member => grouping(GroupBy::Member),
            GroupBy::Model | GroupBy::Day => grouping(GroupBy::Model),
        };
        let mut merged = Merged::default();
        for &part in &span.parts {
            let (key, day) = (grouping.key(part), day.key(part));
            let report = UsageQuery::report(part, "team_id", team_id)
                .key(&format!("CAST({day} AS BIGINT)"), "day")
                .key(&format!("CAST({key} AS TEXT)"), "k")
                .key(grouping.label, "label_raw")
                .join(grouping.join)
                .group_by(day)
                .group_by(key);
            let sql = report.sql();
            for r in report.query(&sql).fetch_all(&self.pool).await? {
                let day: i64 = r.try_get("day")?;
                let label: Option<String> = r.try_get("label_raw")?;
                let group = UsageGroup::from_sums(&r, r.try_get("k")?, label.unwrap_or_default())?;
                merged.add(day, group);
            }
        }
        Ok(merged
            .groups
            .into_iter()
            .map(|((day, _), group)| (day, group))
            .collect())
    }
}

/// The UTC day number of epoch milliseconds.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}
