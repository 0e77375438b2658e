-- The small `customers` table of `make demo` (10,000 rows), beside the 1,000,000-row orders of pg_orders.sql.
-- Names with commas and quotes exercise CSV quoting; some emails are NULL.
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
  id          int PRIMARY KEY,
  name        text NOT NULL,
  email       text,
  country     char(2) NOT NULL,
  vip         boolean NOT NULL,
  created_at  timestamptz NOT NULL
);
INSERT INTO customers
SELECT g,
       CASE WHEN g % 25 = 0 THEN 'O''Brien, Customer ' || g ELSE 'Customer ' || g END,
       CASE WHEN g % 17 = 0 THEN NULL ELSE 'customer' || g || '@example.com' END,
       (ARRAY['DE','FR','US','GB','NL','PL','ES','IT'])[1 + g % 8],
       g % 50 = 0,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '37 minutes 11.25 seconds'
FROM generate_series(1, 10000) g;
ANALYZE customers;
