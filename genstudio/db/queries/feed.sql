-- The unified feed: the newest jobs of all three tables in one statement.
--
-- The page is cut on keys before anything is rendered, and every key comes from an index
-- read in its own order, so the plan does not depend on statistics: `{streams}` is one
-- `feed_stream` per requested type and visibility stream (see jobs.sql: `stream_*`), joined
-- with UNION, each reading at most limit + 1 entries of the index that matches its WHERE and
-- ORDER BY. UNION drops a job two streams both found (your own shared job). Only the page's
-- rows are then fetched by primary key and rendered as JSON; `{render}` is one
-- `feed_render` per requested type, joined with UNION ALL. `{filters}` are the `filter_*`
-- fragments of jobs.sql. The statement returns the whole response body, `next_cursor`
-- included (jobs.sql: `next_cursor`), which the API sends as it is.

-- name: feed
WITH page AS (
    SELECT type, created_at, id FROM ({streams}) AS candidates
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s + 1
), shown AS (
    SELECT * FROM page ORDER BY created_at DESC, id DESC LIMIT %(limit)s
), oldest AS (
    SELECT created_at, id FROM shown ORDER BY created_at, id LIMIT 1
), items AS (
    {render}
)
SELECT '{{"success":true,"items":'
       || (SELECT coalesce(json_agg(item ORDER BY created_at DESC, id DESC), '[]') FROM items)::text
       || ',"next_cursor":' || {next_cursor} || '}}' AS body

-- name: feed_stream
(
    SELECT {type} AS type, j.created_at, j.id
    FROM {table} j
    WHERE {stream} AND {filters}
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT %(limit)s + 1
)

-- name: feed_render
SELECT s.created_at, s.id, {item_json} AS item
FROM shown s JOIN {table} j ON j.id = s.id
WHERE s.type = {type}
