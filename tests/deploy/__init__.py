"""Deployment files: Dockerfile, docker-compose.yml, deploy/k8s (checked without Docker)."""
