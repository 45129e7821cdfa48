-- Stockroom's schema on PostgreSQL.
--
-- Uniqueness holds among live rows only: each rule is a partial unique index named after
-- `stockroom_core::Constraint::as_str()`, so a unique violation maps back to the constraint.
-- Timestamps are timestamptz (microseconds, like `stockroom_core::time::now()`).
-- Indexes scanned in order (the list order, the purge's range) spell their order out (`ASC`):
-- the same index on PostgreSQL, but YugabyteDB hash-shards an index's first column unless told
-- otherwise. Indexes looked up by equality on their first column leave it to the engine.

-- Trigram indexes make `search_text LIKE '%…%'` an index scan (pg_trgm is a trusted extension
-- since PostgreSQL 13: a database owner may create it).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz,
    version      bigint      NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX users_email_live ON users (email) WHERE deleted_at IS NULL;
CREATE INDEX users_order ON users (created_at ASC, id ASC);

CREATE TABLE categories (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    slug       text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    version    bigint      NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX categories_slug_live ON categories (slug) WHERE deleted_at IS NULL;
CREATE INDEX categories_order ON categories (created_at ASC, id ASC);

CREATE TABLE products (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    slug        text        NOT NULL,
    sku         text        NOT NULL,
    description text,
    status      text        NOT NULL
        CONSTRAINT products_status_known CHECK (status IN ('draft', 'active', 'archived')),
    stock       bigint      NOT NULL
        CONSTRAINT products_stock_non_negative CHECK (stock >= 0),
    category_id uuid
        CONSTRAINT products_category_fk REFERENCES categories (id) ON DELETE SET NULL,
    created_by  uuid
        CONSTRAINT products_creator_fk REFERENCES users (id) ON DELETE SET NULL,
    -- `stockroom_core::search_document(name, sku, description)`, computed in Rust at every write
    -- that changes those fields.
    search_text text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    version     bigint      NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX products_slug_live ON products (slug) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX products_sku_live ON products (sku) WHERE deleted_at IS NULL;
-- The order of every list and the keyset position.
CREATE INDEX products_order ON products (created_at ASC, id ASC);
-- Products of a category (lists by category, and ON DELETE SET NULL).
CREATE INDEX products_category ON products (category_id, created_at, id);
CREATE INDEX products_creator ON products (created_by);
-- Search: `search_text LIKE '%query%'`.
CREATE INDEX products_search ON products USING gin (search_text gin_trgm_ops);
-- The trash and purges.
CREATE INDEX products_deleted ON products (deleted_at ASC) WHERE deleted_at IS NOT NULL;

CREATE TABLE reviews (
    id         uuid        PRIMARY KEY,
    product_id uuid        NOT NULL
        CONSTRAINT reviews_product_fk REFERENCES products (id) ON DELETE CASCADE,
    author_id  uuid        NOT NULL
        CONSTRAINT reviews_author_fk REFERENCES users (id) ON DELETE CASCADE,
    rating     smallint    NOT NULL
        CONSTRAINT reviews_rating_range CHECK (rating BETWEEN 1 AND 5),
    body       text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    version    bigint      NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX reviews_author_live ON reviews (product_id, author_id) WHERE deleted_at IS NULL;
-- A product's reviews, newest first.
CREATE INDEX reviews_product ON reviews (product_id, created_at DESC, id DESC);
CREATE INDEX reviews_author ON reviews (author_id);
CREATE INDEX reviews_order ON reviews (created_at ASC, id ASC);

-- The ledger: append-only, no foreign keys (it outlives purged products).
CREATE TABLE stock_movements (
    id              uuid        PRIMARY KEY,
    source_id       uuid        NOT NULL,
    target_id       uuid        NOT NULL,
    quantity        bigint      NOT NULL
        CONSTRAINT stock_movements_quantity_positive CHECK (quantity > 0),
    idempotency_key text,
    created_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX stock_movements_idempotency_key ON stock_movements (idempotency_key);
CREATE INDEX stock_movements_source ON stock_movements (source_id, created_at, id);
CREATE INDEX stock_movements_target ON stock_movements (target_id, created_at, id);
