-- usage: mariadb rivet_bench < my_orders.sql  (5,000,000 rows; scripts/bench.py substitutes the table name `orders`
-- and the row count in seq_1_to_5000000 for other sizes). Same distributions as pg_orders.sql.
SET SESSION unique_checks=0, foreign_key_checks=0;
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (
  id          BIGINT NOT NULL PRIMARY KEY,
  customer_id INT NOT NULL,
  status      VARCHAR(16) NOT NULL,
  amount      DECIMAL(12,2) NOT NULL,
  created_at  DATETIME(6) NOT NULL,
  updated_at  DATETIME(6) NULL,
  note        TEXT NULL,
  flag        BOOLEAN NOT NULL
) ENGINE=InnoDB;
INSERT INTO orders
SELECT seq,
       1 + FLOOR(RAND() * 200000),
       ELT(1 + FLOOR(RAND()*10), 'pending','paid','paid','shipped','shipped','delivered','delivered','delivered','cancelled','refunded'),
       ROUND((1 + RAND() * 999) * IF(RAND() < 0.05, 20, 1), 2),
       TIMESTAMP'2021-01-01 00:00:00' + INTERVAL seq*20 SECOND + INTERVAL (CRC32(seq) % 20000000) MICROSECOND,
       IF(RAND() < 0.3, NULL, TIMESTAMP'2021-01-01 00:00:00' + INTERVAL seq*20 SECOND + INTERVAL (CRC32(seq) % 20000000) MICROSECOND + INTERVAL FLOOR(RAND()*20*86400*1000000) MICROSECOND),
       IF(RAND() < 0.1, NULL, CONCAT(ELT(1 + FLOOR(RAND()*6), 'Leave at front door','Call before delivery','Gift wrap please','Fragile, handle with care','Deliver after 5pm','Customer asked for invoice'), ' ref ', SUBSTR(MD5(seq), 1, 14))),
       RAND() < 0.5
FROM seq_1_to_5000000;
ANALYZE TABLE orders;
