//! stub
use super::*;
use crate::config::ProviderConfig;
use crate::domain::VideoRequest;
use async_trait::async_trait;
pub struct Apimodels;
impl Apimodels {
    pub fn new(_n: &str, _c: &ProviderConfig) -> anyhow::Result<Self> {
        todo!()
    }
}
#[async_trait]
impl Provider for Apimodels {
    fn name(&self) -> &str {
        todo!()
    }
    fn capabilities(&self) -> &Capabilities {
        todo!()
    }
    async fn submit(&self, _t: &str, _r: &VideoRequest) -> Result<Submitted, ProviderError> {
        todo!()
    }
    async fn query(&self, _u: &str) -> Result<UpstreamTask, ProviderError> {
        todo!()
    }
    async fn find_by_external_id(&self, _t: &str) -> Result<Lookup, ProviderError> {
        todo!()
    }
}
