-- Dead letters are replayed by id alone (POST /admin/dead-letters/{id}/replay).
CREATE UNIQUE INDEX dead_letters_by_id ON dead_letters (dead_letter_id);
CREATE INDEX dead_letters_pending ON dead_letters (tenant_id, created_at) WHERE replayed_at IS NULL;
