"""The ingest service: validates events posted over HTTP and produces them to Kafka."""
