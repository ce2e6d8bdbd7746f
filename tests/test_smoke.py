import psycopg


def test_migrated_database_has_job_tables(db_url):
    with psycopg.connect(db_url) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"video_jobs", "image_jobs", "text_jobs"} <= names
