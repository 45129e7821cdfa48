-- The tables Stockroom made for entities from their declarations (Stockroom's own and the
-- application's; see src/tables.rs): one row per table, written once the table was brought to
-- its declaration. A table of an entity's name with no row here and without Stockroom's mark in
-- its COMMENT was not made by Stockroom, and is never taken over.
CREATE TABLE IF NOT EXISTS `stockroom_entities` (
    `table_name` VARCHAR(64)  NOT NULL,
    -- The entity's name (`Schema::name`).
    `entity`     VARCHAR(64)  NOT NULL,
    -- `stockroom_core::schema::tables::definition`: the columns and unique rules, one per line.
    `definition` MEDIUMTEXT   NOT NULL,
    -- The SHA-256 of `definition`, in lower-case hex.
    `checksum`   CHAR(64)     NOT NULL,
    `applied_at` DATETIME(6)  NOT NULL,
    PRIMARY KEY (`table_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
