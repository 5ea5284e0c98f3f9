"""ingest: the HTTP front door where marketing platforms post events into Kafka."""
