-- usage: psql -v tbl=sparse -v n=1000000 -v shape=sparse -f pg_sparse.sql   (scripts/bench.py, suite `layouts`)
-- A table whose integer key is far from dense, for keyset (chunk_by_key) vs range (chunk_column) chunks:
--   shape=sparse: ids 1..n/2 and 10^9+1..10^9+n/2, two runs 10^9 apart (range windows of 100,000 ids: ~10,000,
--                 of which 10 hold rows);
--   shape=skewed: ids 1..0.9n dense, then 0.1n ids 200 apart (windows of 100,000 ids: 9 full ones, then ~200 of
--                 500 rows each).
-- Columns as in pg_orders.sql minus the rarely useful ones: an int, a numeric, a timestamp and a text payload.
DROP TABLE IF EXISTS :tbl;
CREATE TABLE :tbl (
  id          bigint PRIMARY KEY,
  customer_id int NOT NULL,
  amount      numeric(12,2) NOT NULL,
  created_at  timestamp NOT NULL,
  note        text NOT NULL
);
INSERT INTO :tbl
SELECT CASE WHEN :'shape' = 'sparse'
            THEN CASE WHEN g <= :n / 2 THEN g ELSE 1000000000 + g - :n / 2 END
            ELSE CASE WHEN g <= :n * 9 / 10 THEN g ELSE :n * 9 / 10 + (g - :n * 9 / 10) * 200 END END,
       1 + floor(random() * 200000)::int,
       round((1 + random() * 999)::numeric, 2),
       timestamp '2021-01-01' + g * interval '20 seconds',
       'ref ' || md5(g::text) || ' ' || substr(md5((g * 7)::text), 1, 1 + g % 32)
FROM generate_series(1, :n) g;
ANALYZE :tbl;
