//! `limit` and `offset` query parameters, validated the same way on every list route.

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::store::Page;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
}

impl Pagination {
    pub fn page(&self) -> Result<Page, ApiError> {
        Ok(crate::ops::page(self.limit, self.offset)?)
    }
}
