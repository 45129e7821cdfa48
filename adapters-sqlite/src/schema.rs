//! The schema, as embedded migrations applied in order (`PRAGMA user_version` counts them).
//!
//! Ids are 16-byte BLOBs (the UUID's bytes, so `ORDER BY id` is the UUID order); timestamps are
//! INTEGER microseconds since the Unix epoch. Every unique index is partial (live rows only)
//! except the ledger's, and is named after the [`Constraint`](stockroom_core::Constraint) it
//! enforces.

use rusqlite_migration::{Migrations, M};

const V1: &str = r#"
CREATE TABLE users (
    id           BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    email        TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    version      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX users_email_live ON users (email) WHERE deleted_at IS NULL;
CREATE INDEX users_order ON users (created_at, id);

CREATE TABLE categories (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    slug       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    version    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX categories_slug_live ON categories (slug) WHERE deleted_at IS NULL;
CREATE INDEX categories_order ON categories (created_at, id);

CREATE TABLE products (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name        TEXT    NOT NULL,
    slug        TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    description TEXT,
    status      TEXT    NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    category_id BLOB REFERENCES categories (id) ON DELETE SET NULL,
    created_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    version     INTEGER NOT NULL,
    search_text TEXT    NOT NULL
) STRICT;
CREATE UNIQUE INDEX products_slug_live ON products (slug) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX products_sku_live ON products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_order ON products (created_at, id);
CREATE INDEX products_category ON products (category_id, created_at, id);
CREATE INDEX products_created_by ON products (created_by);

CREATE TABLE reviews (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    product_id BLOB    NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    author_id  BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    version    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX reviews_author_live ON reviews (product_id, author_id) WHERE deleted_at IS NULL;
CREATE INDEX reviews_order ON reviews (created_at, id);
CREATE INDEX reviews_product ON reviews (product_id, created_at, id);
CREATE INDEX reviews_author ON reviews (author_id);

-- The ledger: append-only, no foreign key (it outlives purged products).
CREATE TABLE stock_movements (
    id              BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    source_id       BLOB    NOT NULL,
    target_id       BLOB    NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX stock_movements_idempotency_key ON stock_movements (idempotency_key);
CREATE INDEX stock_movements_order ON stock_movements (created_at, id);
CREATE INDEX stock_movements_source ON stock_movements (source_id, created_at, id);
CREATE INDEX stock_movements_target ON stock_movements (target_id, created_at, id);
"#;

const MIGRATIONS: &[M<'static>] = &[M::up(V1)];

/// The embedded migrations.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().expect("valid migrations");
    }
}
