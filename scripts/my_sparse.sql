-- usage: scripts/bench.py (suite `layouts`) prepends SET @shape = 'sparse' | 'skewed', @n = <rows>, and substitutes
-- the table name `sparse_tbl` and the row count in seq_1_to_1000000. Same keys and columns as pg_sparse.sql (see there).
SET SESSION unique_checks=0, foreign_key_checks=0;
DROP TABLE IF EXISTS sparse_tbl;
CREATE TABLE sparse_tbl (
  id          BIGINT NOT NULL PRIMARY KEY,
  customer_id INT NOT NULL,
  amount      DECIMAL(12,2) NOT NULL,
  created_at  DATETIME(6) NOT NULL,
  note        TEXT NOT NULL
) ENGINE=InnoDB;
INSERT INTO sparse_tbl
SELECT IF(@shape = 'sparse',
          IF(seq <= @n DIV 2, seq, 1000000000 + seq - @n DIV 2),
          IF(seq <= @n * 9 DIV 10, seq, @n * 9 DIV 10 + (seq - @n * 9 DIV 10) * 200)),
       1 + FLOOR(RAND() * 200000),
       ROUND(1 + RAND() * 999, 2),
       TIMESTAMP'2021-01-01 00:00:00' + INTERVAL seq*20 SECOND,
       CONCAT('ref ', MD5(seq), ' ', SUBSTR(MD5(seq * 7), 1, 1 + seq % 32))
FROM seq_1_to_1000000;
ANALYZE TABLE sparse_tbl;
