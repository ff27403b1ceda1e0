//! Durable results: omnigate's own copy of each finished video in object storage (a local
//! folder, or any S3-compatible service), made by the `results` worker and served with
//! range requests at the content endpoints. Provider URLs expire; the copy does not.

mod copy;
mod serve;

pub use copy::{copy_video, CopyError, Stored};
pub use serve::{serve, video_type, ByteRange, StorageUnavailable};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

/// Where the copies go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultsBackend {
    /// A folder on this machine (`local_dir`): one gateway, or a shared volume.
    #[default]
    Local,
    /// An S3-compatible bucket (`s3_*` keys): AWS, MinIO, R2, Ceph...
    S3,
}

/// `[results]`: copying finished videos into omnigate's own storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsConfig {
    /// Copy each finished video (off by default: it needs storage sized for the videos,
    /// and an operator should choose where). When off, the content endpoints redirect to
    /// the provider's URL.
    pub enabled: bool,
    /// `local` (default) or `s3`.
    pub backend: ResultsBackend,
    /// The folder copies are written under (backend `local`); created at start.
    pub local_dir: PathBuf,
    /// Key prefix inside the folder or bucket, e.g. `omnigate/` (may be empty).
    pub prefix: String,
    /// Bucket name (backend `s3`, required).
    pub s3_bucket: Option<String>,
    /// Region (backend `s3`); S3-compatible services mostly ignore it.
    pub s3_region: String,
    /// Endpoint of an S3-compatible service, e.g. `http://minio:9000`; unset for AWS.
    /// Requests then use path-style addressing (`{endpoint}/{bucket}/{key}`).
    pub s3_endpoint: Option<String>,
    /// Names of the environment variables holding the access key id and the secret key.
    /// Unset: the AWS defaults (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, instance
    /// metadata, ...).
    pub s3_access_key_id_env: Option<String>,
    pub s3_secret_access_key_env: Option<String>,
    /// Allows a plain-http `s3_endpoint` (a service on a private network, tests).
    pub s3_allow_http: bool,
    /// Largest video copied, in bytes; a larger one is not copied (and keeps being served
    /// from the provider).
    pub max_bytes: u64,
    /// Seconds one copy (download and upload) may take before it is abandoned and retried.
    /// Shorter than `workers.stall_secs`: a worker step waits on its copies, and `/healthz`
    /// would report a step longer than that as stuck.
    pub download_timeout_secs: f64,
    /// How long a claim on a copy lasts; longer than `download_timeout_secs`, so no other
    /// gateway process starts the same copy while one is running.
    pub lease_secs: u64,
    /// Attempts at one copy before it is given up (`failed`).
    pub max_attempts: u32,
    /// Wait before the second attempt, in seconds; doubled after each failure, up to
    /// `max_backoff_secs`.
    pub retry_base_secs: f64,
    pub max_backoff_secs: f64,
    /// Copies in flight at once in one gateway process.
    pub concurrency: usize,
    /// Most copies one worker step claims.
    pub batch_size: u32,
    /// How often the worker looks for due copies, in milliseconds.
    pub tick_ms: u64,
    /// Lets result URLs use plain http and reach loopback, private and other internal
    /// addresses. Off in production (a provider's answer is not trusted to point at the
    /// gateway's own network); meant for tests and private deployments.
    pub allow_private_sources: bool,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        ResultsConfig {
            enabled: false,
            backend: ResultsBackend::Local,
            local_dir: PathBuf::from("results"),
            prefix: String::new(),
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_endpoint: None,
            s3_access_key_id_env: None,
            s3_secret_access_key_env: None,
            s3_allow_http: false,
            max_bytes: 2 * 1024 * 1024 * 1024,
            download_timeout_secs: 240.0,
            lease_secs: 300,
            max_attempts: 10,
            retry_base_secs: 10.0,
            max_backoff_secs: 1800.0,
            concurrency: 4,
            batch_size: 8,
            tick_ms: 1000,
            allow_private_sources: false,
        }
    }
}

impl ResultsConfig {
    pub fn download_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.download_timeout_secs)
    }

    /// The relations start-up insists on (named by key), checked even when disabled so a
    /// bad value is found before someone turns the feature on. `stall_secs` is
    /// `workers.stall_secs`.
    pub fn validate(&self, stall_secs: f64) -> anyhow::Result<()> {
        const DAY: f64 = 86_400.0;
        for (key, v) in [
            ("results.download_timeout_secs", self.download_timeout_secs),
            ("results.retry_base_secs", self.retry_base_secs),
            ("results.max_backoff_secs", self.max_backoff_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= DAY) {
                bail!("{key}: must be a positive number of seconds (at most a day)");
            }
        }
        if self.lease_secs as f64 <= self.download_timeout_secs + 5.0 {
            bail!(
                "results.lease_secs: must be longer than results.download_timeout_secs + 5 ({}), so a claim outlives its copy",
                self.download_timeout_secs + 5.0
            );
        }
        if self.enabled && self.download_timeout_secs >= stall_secs {
            bail!(
                "results.download_timeout_secs: must be shorter than workers.stall_secs ({stall_secs}), or /healthz reports a long copy as a stuck worker"
            );
        }
        if self.max_bytes == 0 {
            bail!("results.max_bytes: must be positive");
        }
        if self.max_attempts == 0
            || self.concurrency == 0
            || self.batch_size == 0
            || self.tick_ms == 0
        {
            bail!("results: max_attempts, concurrency, batch_size and tick_ms must be positive");
        }
        if self.enabled && self.backend == ResultsBackend::S3 {
            if self
                .s3_bucket
                .as_deref()
                .is_none_or(|b| b.trim().is_empty())
            {
                bail!("results.s3_bucket: required with results.backend = \"s3\"");
            }
            if let Some(e) = &self.s3_endpoint {
                let url = url::Url::parse(e)
                    .map_err(|_| anyhow::anyhow!("results.s3_endpoint: not a URL: {e:?}"))?;
                match url.scheme() {
                    "https" => {}
                    "http" if self.s3_allow_http => {}
                    "http" => {
                        bail!("results.s3_endpoint: plain http needs results.s3_allow_http = true")
                    }
                    _ => bail!("results.s3_endpoint: must be an http(s) URL"),
                }
            }
            if self.s3_access_key_id_env.is_some() != self.s3_secret_access_key_env.is_some() {
                bail!("results.s3_access_key_id_env: set both it and results.s3_secret_access_key_env, or neither");
            }
        }
        Ok(())
    }
}

/// The object store and the HTTP client copies are fetched with.
pub struct Results {
    pub config: ResultsConfig,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    fetch: reqwest::Client,
}

impl Results {
    /// The configured store, or None when `results.enabled` is off. Reads the S3
    /// credentials from the environment here, naming the key whose variable is missing.
    pub fn build(config: &ResultsConfig) -> anyhow::Result<Option<Results>> {
        if !config.enabled {
            return Ok(None);
        }
        let store: Arc<dyn ObjectStore> = match config.backend {
            ResultsBackend::Local => {
                std::fs::create_dir_all(&config.local_dir).with_context(|| {
                    format!(
                        "results.local_dir: cannot create {}",
                        config.local_dir.display()
                    )
                })?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(&config.local_dir)
                        .context("results.local_dir")?,
                )
            }
            ResultsBackend::S3 => Arc::new(s3(config)?),
        };
        Ok(Some(Results {
            config: config.clone(),
            store,
            prefix: config.prefix.trim_matches('/').to_string(),
            fetch: copy::fetch_client(config)?,
        }))
    }

    /// The object store itself (tests look at what was written).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A key (`store::object_key`) under the configured prefix.
    pub fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }
}

fn s3(config: &ResultsConfig) -> anyhow::Result<object_store::aws::AmazonS3> {
    let read = |key: &str, var: &str| -> anyhow::Result<String> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .with_context(|| format!("results.{key}: environment variable {var} is not set"))
    };
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(config.s3_bucket.clone().unwrap_or_default())
        .with_region(&config.s3_region)
        .with_allow_http(config.s3_allow_http);
    if let Some(endpoint) = &config.s3_endpoint {
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    if let (Some(id), Some(secret)) = (
        &config.s3_access_key_id_env,
        &config.s3_secret_access_key_env,
    ) {
        b = b
            .with_access_key_id(read("s3_access_key_id_env", id)?)
            .with_secret_access_key(read("s3_secret_access_key_env", secret)?);
    }
    b.build()
        .context("results: the S3 store could not be set up")
}
