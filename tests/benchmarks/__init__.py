"""The measuring scripts in benchmarks/."""
