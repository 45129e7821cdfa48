-- The stock ledger (`stockroom_core::StockMovement`): append-only, one row per applied transfer.
-- No foreign keys: it outlives the products it names (a purged product's rows stay).
--
-- Ids are BINARY(16) (the UUID's bytes, so `ORDER BY created_at, id` pages as on PostgreSQL);
-- `created_at` is DATETIME(6) holding UTC. An idempotency key is 1 to 128 visible ASCII
-- characters (`stockroom_core::MAX_IDEMPOTENCY_KEY_LEN`); a row without one has NULL, which the
-- unique index allows any number of times. A second row with a taken key fails with 1062 naming
-- `stock_movements_idempotency_key`, which the adapter maps to
-- `stockroom_core::Constraint::IDEMPOTENCY_KEY`.
--
-- Safe to run again (MariaDB has no transactional DDL, so a file cut short runs again whole):
-- one CREATE TABLE IF NOT EXISTS, with its indexes and CHECK inside.
CREATE TABLE IF NOT EXISTS `stock_movements` (
    `id`              BINARY(16)   NOT NULL,
    `source_id`       BINARY(16)   NOT NULL,
    `target_id`       BINARY(16)   NOT NULL,
    `quantity`        BIGINT       NOT NULL,
    `idempotency_key` VARCHAR(128) NULL,
    `created_at`      DATETIME(6)  NOT NULL,
    PRIMARY KEY (`id`),
    UNIQUE KEY `stock_movements_idempotency_key` (`idempotency_key`),
    -- A product's movements, in `(created_at, id)` order, from either side.
    KEY `stock_movements_source` (`source_id`, `created_at`, `id`),
    KEY `stock_movements_target` (`target_id`, `created_at`, `id`),
    CONSTRAINT `stock_movements_quantity_positive` CHECK (`quantity` > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
