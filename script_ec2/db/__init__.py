"""The database adapter: engine factory, typed models, Alembic migrations, reference data.

``engine.connect`` builds an engine from a URL (SQLite file or PostgreSQL) and turns driver
failures into :mod:`script_ec2.errors` types; ``migrate`` runs the migrations shipped in
``db/migrations``; ``models`` holds the declarative tables; ``reference`` reads the zip/county
lookup. Importing this package imports nothing heavy; import the submodule you need.
"""
