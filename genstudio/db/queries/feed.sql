-- The unified feed: the newest jobs of all three tables in one statement. Each branch reads
-- at most limit + 1 rows from its table through the (created_at DESC, id DESC) indexes, and
-- PostgreSQL merges them, cuts the page and renders it as JSON. `{branches}` is
-- `feed_branch` once per requested type, joined with UNION ALL; `{filters}` are the
-- `filter_*` fragments of jobs.sql.

-- name: feed
WITH page AS (
    SELECT * FROM ({branches}) AS b
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s + 1
), shown AS (
    SELECT * FROM page ORDER BY created_at DESC, id DESC LIMIT %(limit)s
), oldest AS (
    SELECT created_at, id FROM shown ORDER BY created_at, id LIMIT 1
)
SELECT
    (SELECT coalesce(json_agg(item ORDER BY created_at DESC, id DESC), '[]')::text FROM shown) AS items,
    (SELECT count(*) FROM page) > %(limit)s AS has_more,
    (SELECT created_at FROM oldest) AS last_created_at,
    (SELECT id FROM oldest) AS last_id

-- name: feed_branch
(
    SELECT j.created_at, j.id, {item_json} AS item
    FROM {table} j
    WHERE {filters}
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT %(limit)s + 1
)
