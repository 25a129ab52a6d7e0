-- A small but realistic shop database: several schemas, roles the restore
-- server lacks, RLS, a partitioned table, sequences, bytea, a large object,
-- odd identifiers, NULLs and escapes.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_app') THEN CREATE ROLE shop_app NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_readonly') THEN CREATE ROLE shop_readonly NOLOGIN; END IF;
END
$$;
GRANT shop_readonly TO shop_app;

CREATE SCHEMA sales AUTHORIZATION shop_app;
CREATE SCHEMA "Reporting Ünits";

CREATE TABLE public.customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    tenant_id int NOT NULL
);
CREATE TABLE public.products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents int NOT NULL CHECK (price_cents >= 0),
    thumbnail bytea
);
CREATE TABLE sales.orders (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL REFERENCES public.customers(id),
    ordered_at date NOT NULL,
    note text,
    PRIMARY KEY (id, ordered_at)
) PARTITION BY RANGE (ordered_at);
CREATE TABLE sales.orders_2025 PARTITION OF sales.orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE sales.orders_2026 PARTITION OF sales.orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE sales.order_items (
    order_id bigint NOT NULL,
    ordered_at date NOT NULL,
    product_id int NOT NULL REFERENCES public.products(id),
    quantity int NOT NULL,
    FOREIGN KEY (order_id, ordered_at) REFERENCES sales.orders(id, ordered_at)
);
CREATE TABLE "Reporting Ünits"."Daily ""Totals"" €" (day date PRIMARY KEY, revenue_cents bigint);
CREATE TABLE public.documents (id serial PRIMARY KEY, title text, content oid);

INSERT INTO public.customers (email, name, tenant_id)
SELECT 'customer' || g || '@example.com',
       CASE WHEN g % 17 = 0 THEN NULL ELSE 'Customer ' || g || E' \\ "quoted" \t tab' END,
       g % 5
FROM generate_series(1, 5000) g;
INSERT INTO public.products (sku, title, price_cents, thumbnail)
SELECT 'SKU-' || g, 'Product ' || g || ' ☕', (g * 137) % 10000, decode(md5(g::text), 'hex')
FROM generate_series(1, 500) g;
INSERT INTO sales.orders (customer_id, ordered_at, note)
SELECT 1 + (g % 5000), DATE '2025-01-01' + (g % 700), CASE WHEN g % 3 = 0 THEN NULL ELSE 'line1' || chr(10) || 'line2' END
FROM generate_series(1, 20000) g;
INSERT INTO sales.order_items (order_id, ordered_at, product_id, quantity)
SELECT o.id, o.ordered_at, 1 + (o.id % 500), 1 + (o.id % 4) FROM sales.orders o;
INSERT INTO "Reporting Ünits"."Daily ""Totals"" €"
SELECT o.ordered_at, sum(i.quantity * p.price_cents)
FROM sales.orders o JOIN sales.order_items i USING (ordered_at) JOIN public.products p ON p.id = i.product_id
WHERE i.order_id = o.id GROUP BY 1;
INSERT INTO public.documents (title, content) VALUES ('terms', lo_from_bytea(0, convert_to('Terms of service', 'UTF8')));

ALTER TABLE sales.orders OWNER TO shop_app;
ALTER TABLE sales.order_items OWNER TO shop_app;
CREATE VIEW sales.revenue_by_month AS
SELECT date_trunc('month', o.ordered_at) AS month, sum(i.quantity) AS items
FROM sales.orders o JOIN sales.order_items i ON i.order_id = o.id AND i.ordered_at = o.ordered_at GROUP BY 1;
GRANT USAGE ON SCHEMA sales TO shop_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA sales TO shop_readonly;
GRANT SELECT ON public.customers TO shop_readonly;

ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON public.customers TO shop_app
    USING (tenant_id = current_setting('app.tenant_id', true)::int);
SELECT setval('public.products_id_seq', 1000);
