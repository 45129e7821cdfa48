-- The transactional outbox (`stockroom_core::outbox`): the events units of work publish,
-- committed with them, and the lanes relays lease to deliver them.
--
-- `sequence` is given at insert and never reused (an identity, not reset by a purge). Within an
-- aggregate it is commit order: a unit of work that publishes an application's event holds the
-- transaction-level advisory lock (class 0x53544f42, the lane) of its lane until it ends, and
-- Stockroom's own events are written under their product's row lock.
CREATE TABLE stockroom_outbox (
    sequence     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `EventId`: the message id the broker sees.
    id           uuid        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    aggregate    text        NOT NULL,
    -- `stockroom_core::outbox::lane_of(aggregate)`, 0 to 31.
    lane         smallint    NOT NULL CHECK (lane >= 0 AND lane < 32),
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    -- Set when a relay acknowledged the event; NULL while it waits.
    delivered_at timestamptz NULL
);

-- A claim: each lane's undelivered events in sequence order (and its oldest one).
CREATE INDEX stockroom_outbox_pending ON stockroom_outbox (lane ASC, sequence ASC)
    WHERE delivered_at IS NULL;

-- A purge: the delivered events, by when they were delivered.
CREATE INDEX stockroom_outbox_delivered ON stockroom_outbox (delivered_at ASC)
    WHERE delivered_at IS NOT NULL;

-- The lanes (`stockroom_core::outbox::LANES`), each leased to at most one claim at a time:
-- `holder` is the claim's token, until `leased_until` (the server's clock).
CREATE TABLE stockroom_outbox_lanes (
    lane         smallint    PRIMARY KEY CHECK (lane >= 0 AND lane < 32),
    holder       uuid        NULL,
    leased_until timestamptz NULL
);

INSERT INTO stockroom_outbox_lanes (lane) SELECT generate_series(0, 31);
