-- Search documents folded with full Unicode case folding and canonical composition
-- (stockroom_core::fold): every product's search_text is made again, in Rust, right before this
-- migration is recorded (see `migrate::refold_search_text`). No table changes.
SELECT 1;
