-- An outbox row's value stays as written, inline and uncompressed, up to a page. PostgreSQL compresses any row
-- over 2 kB by default, and a fact with sealed personal data is often over it (rj.case.opened: 1.6 kB in clear,
-- 2.4 kB sealed): the database then spent its time compressing ciphertext on insert and decompressing it for the
-- relay, to save little (2.4 kB became 1.7 kB), on rows that are deleted once published and purged.
ALTER TABLE outbox SET (toast_tuple_target = 8160);
