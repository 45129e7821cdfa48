//! Categories: the `categories` table, its row mapping and filter, and its repository port.

use async_trait::async_trait;
use rusqlite::types::Value;
use stockroom_core::{
    Category, CategoryFilter, CategoryId, CategoryReader, CategoryRepository, Result,
};

use super::codec::{blob, meta_values, text, RowReader};
use super::{Table, Where};
use crate::conn::Conn;

impl Table for Category {
    table_columns!("categories": "id", "name", "slug");

    fn read(row: &mut RowReader<'_, '_>) -> rusqlite::Result<Self> {
        let id = CategoryId::from_uuid(row.uuid()?);
        let name = row.get()?;
        let slug = row.get()?;
        let (created_at, updated_at, deleted_at, version) = row.meta()?;
        Ok(Category {
            id,
            name,
            slug,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }

    fn values(&self, out: &mut Vec<Value>) {
        out.extend([blob(self.id), text(&self.name), text(&self.slug)]);
        out.extend(meta_values(self));
    }

    fn filter(filter: &CategoryFilter, w: &mut Where) {
        if let Some(s) = &filter.slug {
            w.and("slug = ?", text(s.as_str()));
        }
    }
}

#[async_trait]
impl CategoryReader for Conn {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        self.by_column("slug", slug.to_owned()).await
    }
}

impl CategoryRepository for Conn {}
