//! Settings: `config/default.toml`, overridden by `INGEST__SECTION__KEY` environment
//! variables, with `DATABASE_URL` selecting an external PostgreSQL.
//!
//! Every field here is documented in `config/default.toml`; the defaults below mirror it so
//! the engine also starts when the file is missing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub writers: WriterSettings,
    pub tenants: TenantSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub audit: AuditSettings,
    pub cluster: ClusterSettings,
    pub retention: RetentionSettings,
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub timeout_secs: u64,
    pub retry_base_secs: u64,
    pub retry_cap_secs: u64,
    pub max_attempts: u32,
    pub poll_interval_ms: u64,
    pub concurrency: usize,
    pub endpoint_concurrency: usize,
    pub max_endpoints_per_tenant: i64,
    pub allow_private_targets: bool,
    pub allow_http: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditSettings {
    pub timezone: String,
    pub premake_months: u32,
    pub maintenance_interval_secs: u64,
    pub retain_months: u32,
    pub archive_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSettings {
    /// Empty: a new id at each start.
    pub instance_id: String,
    pub heartbeat_ms: u64,
    pub lease_ttl_ms: u64,
    /// Where other instances reach this one's HTTP API (host:port); empty: the bound address.
    pub advertised_http_address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    pub scan_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub sample_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub max_scan_body_bytes: u64,
    pub max_batch_body_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
    pub pool_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub read_pool_size: u32,
    pub read_pool_timeout_secs: u64,
    pub read_pool_test_on_check_out: bool,
    pub read_statement_timeout_ms: u64,
    pub embedded: EmbeddedSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddedSettings {
    pub data_dir: PathBuf,
    pub port: u16,
    pub os_user: String,
    pub config_file: PathBuf,
    pub startup_timeout_secs: u64,
    pub relocation_root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngestSettings {
    pub chunk_records: usize,
    /// A scan whose body is at least this large is chunked at `large_scan_chunk_records`.
    pub large_scan_body_bytes: u64,
    pub large_scan_chunk_records: usize,
    pub max_scan_records: usize,
    pub max_batch_records: usize,
    pub batch_max_wait_secs: u64,
    pub max_total_backlog_records: i64,
    pub admission_budget_bytes: u64,
    pub admission_wait_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WriterSettings {
    pub count: usize,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub retry_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TenantSettings {
    pub default_records_per_second: i64,
    pub default_burst: i64,
    pub default_max_backlog_records: i64,
    pub max_in_flight_chunks: usize,
    pub idle_timeout_secs: u64,
    pub sweep_interval_secs: u64,
    pub priority_aging_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub bootstrap_admin_token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownSettings {
    pub grace_period_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The file every setting is documented in, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

impl Settings {
    /// Loads settings from `config_file_opt` (default `config/default.toml`, optional), then the
    /// process environment.
    pub fn load(config_file_opt: Option<&Path>) -> Result<Settings, config::ConfigError> {
        let environment: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(config_file_opt, &environment)
    }

    /// Like [`Settings::load`] with an explicit environment, so tests never touch the process's.
    pub fn load_from(
        config_file_opt: Option<&Path>,
        environment: &[(String, String)],
    ) -> Result<Settings, config::ConfigError> {
        let config_file = config_file_opt.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
        let ingest_environment: config::Map<String, String> = environment
            .iter()
            .filter(|(key, _)| key.starts_with("INGEST__"))
            .cloned()
            .collect();
        let mut builder = Self::defaults()?
            .add_source(config::File::from(config_file).required(config_file_opt.is_some()))
            .add_source(
                config::Environment::with_prefix("INGEST")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(ingest_environment)),
            );
        if let Some((_, url)) = environment.iter().find(|(key, _)| key == "DATABASE_URL") {
            builder = builder.set_override("database.url", url.clone())?;
        }
        builder.build()?.try_deserialize()
    }

    fn defaults(
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, config::ConfigError> {
        config::Config::builder()
            .set_default("http.host", "127.0.0.1")?
            .set_default("http.port", 8080)?
            .set_default("http.max_scan_body_bytes", 64 * 1024 * 1024)?
            .set_default("http.max_batch_body_bytes", 16 * 1024 * 1024)?
            .set_default("database.url", "")?
            .set_default("database.pool_size", 8)?
            .set_default("database.pool_timeout_secs", 5)?
            .set_default("database.connect_timeout_secs", 5)?
            .set_default("database.read_pool_size", 8)?
            .set_default("database.read_pool_timeout_secs", 5)?
            .set_default("database.read_pool_test_on_check_out", false)?
            .set_default("database.read_statement_timeout_ms", 10_000)?
            .set_default("database.embedded.data_dir", ".data/postgres")?
            .set_default("database.embedded.port", 0)?
            .set_default("database.embedded.os_user", "postgres")?
            .set_default("database.embedded.config_file", "config/postgresql.conf")?
            .set_default("database.embedded.startup_timeout_secs", 60)?
            .set_default(
                "database.embedded.relocation_root",
                "/var/lib/ingest-engine",
            )?
            .set_default("ingest.chunk_records", 1000)?
            .set_default("ingest.large_scan_body_bytes", 8 * 1024 * 1024)?
            .set_default("ingest.large_scan_chunk_records", 5000)?
            .set_default("ingest.max_scan_records", 100_000)?
            .set_default("ingest.max_batch_records", 10_000)?
            .set_default("ingest.batch_max_wait_secs", 30)?
            .set_default("ingest.max_total_backlog_records", 50_000_000)?
            .set_default("ingest.admission_budget_bytes", 160 * 1024 * 1024)?
            .set_default("ingest.admission_wait_secs", 30)?
            .set_default("writers.count", 4)?
            .set_default("writers.retry_base_ms", 100)?
            .set_default("writers.retry_cap_ms", 10_000)?
            .set_default("writers.retry_attempts", 5)?
            .set_default("tenants.default_records_per_second", 100_000)?
            .set_default("tenants.default_burst", 100_000)?
            .set_default("tenants.default_max_backlog_records", 5_000_000)?
            .set_default("tenants.max_in_flight_chunks", 2)?
            .set_default("tenants.idle_timeout_secs", 60)?
            .set_default("tenants.sweep_interval_secs", 5)?
            .set_default("tenants.priority_aging_secs", 5)?
            .set_default("auth.bootstrap_admin_token", "")?
            .set_default("metrics.sample_interval_secs", 10)?
            .set_default("shutdown.grace_period_secs", 30)?
            .set_default("audit.timezone", "Asia/Ho_Chi_Minh")?
            .set_default("audit.premake_months", 3)?
            .set_default("audit.maintenance_interval_secs", 3600)?
            .set_default("audit.retain_months", 12)?
            .set_default("audit.archive_dir", ".data/audit-archive")?
            .set_default("retention.scan_days", 30)?
            .set_default("cluster.instance_id", "")?
            .set_default("cluster.heartbeat_ms", 1_000)?
            .set_default("cluster.lease_ttl_ms", 5_000)?
            .set_default("cluster.advertised_http_address", "")?
            .set_default("webhooks.timeout_secs", 10)?
            .set_default("webhooks.retry_base_secs", 10)?
            .set_default("webhooks.retry_cap_secs", 21_600)?
            .set_default("webhooks.max_attempts", 15)?
            .set_default("webhooks.poll_interval_ms", 250)?
            .set_default("webhooks.concurrency", 64)?
            .set_default("webhooks.endpoint_concurrency", 2)?
            .set_default("webhooks.max_endpoints_per_tenant", 20)?
            .set_default("webhooks.allow_private_targets", false)?
            .set_default("webhooks.allow_http", false)?
            .set_default("log.format", "text")?
            .set_default("log.level", "info")
    }

    /// The external database URL, if one is configured.
    pub fn database_url_opt(&self) -> Option<&str> {
        let url = self.database.url.trim();
        (!url.is_empty()).then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn repository_config() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE)
    }

    #[test]
    fn the_documented_file_matches_the_built_in_defaults() {
        let from_file = Settings::load_from(Some(&repository_config()), &[]).unwrap();
        let built_in =
            Settings::load_from(Some(Path::new("/nonexistent/config.toml")), &[]).unwrap_err();
        // A file named explicitly must exist; an absent default file falls back to built-ins.
        assert!(built_in.to_string().contains("not found"));
        let defaults_only = Settings::load_from(None, &[]).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults_only:?}"));
        // The read pool is its own pool, tested on check-out only when asked.
        assert_eq!(defaults_only.database.read_pool_size, 8);
        assert_eq!(defaults_only.database.read_pool_timeout_secs, 5);
        assert!(!defaults_only.database.read_pool_test_on_check_out);
        assert_eq!(defaults_only.database.read_statement_timeout_ms, 10_000);
    }

    #[test]
    fn environment_variables_override_the_file() {
        let settings = Settings::load_from(
            Some(&repository_config()),
            &environment(&[
                ("INGEST__HTTP__PORT", "9123"),
                ("INGEST__WRITERS__COUNT", "7"),
                ("INGEST__DATABASE__EMBEDDED__DATA_DIR", "/var/tmp/engine"),
                ("INGEST__LOG__FORMAT", "json"),
                ("INGEST__DATABASE__READ_POOL_SIZE", "3"),
                ("INGEST__DATABASE__READ_POOL_TEST_ON_CHECK_OUT", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.http.port, 9123);
        assert_eq!(settings.database.read_pool_size, 3);
        assert!(settings.database.read_pool_test_on_check_out);
        assert_eq!(settings.writers.count, 7);
        assert_eq!(
            settings.database.embedded.data_dir,
            PathBuf::from("/var/tmp/engine")
        );
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.database_url_opt(), None);
    }

    #[test]
    fn database_url_selects_an_external_database() {
        let settings = Settings::load_from(
            Some(&repository_config()),
            &environment(&[("DATABASE_URL", "postgres://app@db.internal:5432/ingest")]),
        )
        .unwrap();
        assert_eq!(
            settings.database_url_opt(),
            Some("postgres://app@db.internal:5432/ingest")
        );
    }
}
