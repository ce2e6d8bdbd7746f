"""PostgreSQL: the embedded server, schema migrations, named queries and the request pool."""
