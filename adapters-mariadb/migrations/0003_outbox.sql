-- The transactional outbox (`stockroom_core::outbox`): the events units of work publish,
-- committed with them, the lanes relays lease to deliver them, and the lanes' publishing locks.
--
-- Safe to run again (MariaDB has no transactional DDL, so a file cut short runs again whole):
-- CREATE TABLE IF NOT EXISTS with indexes and CHECKs inside, rows seeded with INSERT IGNORE.

-- The events. `sequence` is given at insert and never reused (AUTO_INCREMENT, whose counter
-- InnoDB keeps across restarts, so a purge of the newest events does not hand their numbers out
-- again). Within an aggregate it is commit order: a unit of work that publishes an
-- application's event first updates its lane's row of `stockroom_outbox_lane_locks` (below),
-- which it then holds until it ends; Stockroom's own events are written under their product's
-- row lock.
CREATE TABLE IF NOT EXISTS `stockroom_outbox` (
    `sequence`     BIGINT       NOT NULL AUTO_INCREMENT,
    -- `EventId`: the message id the broker sees (the UUID's bytes).
    `id`           BINARY(16)   NOT NULL,
    -- At most `stockroom_core::outbox::MAX_SUBJECT_LEN` (200) ASCII bytes.
    `subject`      VARCHAR(200) NOT NULL,
    -- At most `stockroom_core::outbox::MAX_AGGREGATE_LEN` (200) characters.
    `aggregate`    VARCHAR(200) NOT NULL,
    -- `stockroom_core::outbox::lane_of(aggregate)`, 0 to 31.
    `lane`         SMALLINT     NOT NULL,
    -- At most `stockroom_core::outbox::MAX_PAYLOAD_LEN` (1 MiB).
    `payload`      MEDIUMBLOB   NOT NULL,
    -- UTC, when the unit of work wrote it.
    `created_at`   DATETIME(6)  NOT NULL,
    -- UTC, when a relay acknowledged it; NULL while it waits.
    `delivered_at` DATETIME(6)  NULL,
    PRIMARY KEY (`sequence`),
    UNIQUE KEY `stockroom_outbox_id` (`id`),
    -- A claim: each lane's undelivered events (`delivered_at IS NULL`, a ref lookup) in sequence
    -- order, and the oldest of them. MariaDB has no partial index: delivered events stay in it,
    -- under their delivery time, out of the way of those lookups.
    KEY `stockroom_outbox_pending` (`lane`, `delivered_at`, `sequence`),
    -- A purge: the delivered events by when they were delivered; the backlog: the count of each
    -- kind, and the oldest undelivered event's time (one lookup: the first NULL entry).
    KEY `stockroom_outbox_delivered` (`delivered_at`, `created_at`),
    CONSTRAINT `stockroom_outbox_lane` CHECK (`lane` >= 0 AND `lane` < 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The lanes (`stockroom_core::outbox::LANES`), each leased to at most one claim at a time:
-- `holder` is the claim's token, until `leased_until` (UTC, the server's clock). Only claims
-- and settles lock these rows.
CREATE TABLE IF NOT EXISTS `stockroom_outbox_lanes` (
    `lane`         SMALLINT    NOT NULL,
    `holder`       BINARY(16)  NULL,
    `leased_until` DATETIME(6) NULL,
    PRIMARY KEY (`lane`),
    CONSTRAINT `stockroom_outbox_lanes_lane` CHECK (`lane` >= 0 AND `lane` < 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO `stockroom_outbox_lanes` (`lane`) VALUES
    (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15),
    (16), (17), (18), (19), (20), (21), (22), (23), (24), (25), (26), (27), (28), (29), (30), (31);

-- The lanes' publishing locks, what PostgreSQL's transaction-level advisory locks are there: a
-- unit of work that publishes an application's event increments `publications` of its lane's
-- row, which locks the row until the transaction ends, so units of work that publish to one lane
-- take their sequence numbers one after the other, in commit order. A table of their own, apart
-- from `stockroom_outbox_lanes`: a claim or a settle never waits for a unit of work still open,
-- and a unit of work never waits for a relay. An update rather than a `SELECT … FOR UPDATE`:
-- on a Galera cluster row locks are a node's own, but two transactions that update one row on
-- two nodes fail certification (one of them gets 1213 and runs again), so the order holds
-- across the cluster too.
CREATE TABLE IF NOT EXISTS `stockroom_outbox_lane_locks` (
    `lane`         SMALLINT        NOT NULL,
    -- How many units of work published to the lane (the update that takes the lock).
    `publications` BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (`lane`),
    CONSTRAINT `stockroom_outbox_lane_locks_lane` CHECK (`lane` >= 0 AND `lane` < 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO `stockroom_outbox_lane_locks` (`lane`) VALUES
    (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15),
    (16), (17), (18), (19), (20), (21), (22), (23), (24), (25), (26), (27), (28), (29), (30), (31);
