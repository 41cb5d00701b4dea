"""The whole service and its parts together: providers through the server, the CLI, crashes and
recovery, retention, the lifecycle fuzzer, cancel races, PostgreSQL events, S3, a cluster."""
