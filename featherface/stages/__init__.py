"""The pipeline's stages: each one reads params.yaml's sections and writes its outputs with their provenance."""
