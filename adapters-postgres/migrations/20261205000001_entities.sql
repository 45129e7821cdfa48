-- The tables Stockroom made for the application's own entities (declared with
-- `stockroom_core::schema::Schema`, their DDL Stockroom's): one row per table, written in the
-- transaction that created or extended it. A table of an entity's name without a row here was
-- not made by Stockroom, and is never taken over.
CREATE TABLE stockroom_entities (
    table_name text        PRIMARY KEY,
    -- The entity's name (`Schema::name`).
    entity     text        NOT NULL,
    -- `stockroom_core::schema::tables::definition`: the columns and unique rules, one per line.
    definition text        NOT NULL,
    -- The SHA-256 of `definition`, in lower-case hex.
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL
);
