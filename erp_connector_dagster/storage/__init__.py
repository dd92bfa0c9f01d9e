"""PostgreSQL storage: the database, its migrations and the bulk writers."""
