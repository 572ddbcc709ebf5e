//! `limit` and `offset` query parameters, validated the same way on every list route.

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::store::Page;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

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
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {MAX_PAGE_SIZE}")));
        }
        Ok(Page { limit, offset: self.offset.unwrap_or(0) })
    }
}
