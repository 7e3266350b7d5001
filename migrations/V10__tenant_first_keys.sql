-- Every primary key and unique index of a tenant table starts with tenant_id (SPEC section 8):
-- that is what lets the tables be distributed by tenant (Citus requires a distributed table's
-- unique indexes to contain the distribution column), and a test checks it from the catalogue.
-- The one exception was the unique index on dead_letters (dead_letter_id) alone, for replays by
-- id; dead_letter_id is an identity column, so its values stay unique without the index being
-- unique, and the lookup keeps its index.
DROP INDEX dead_letters_by_id;
CREATE INDEX dead_letters_by_id ON dead_letters (dead_letter_id);
