"""Code shared by the leadflow services: event schemas, settings, Kafka adapters."""
