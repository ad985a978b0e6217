"""The replaybank REST service: datasets, versions, uploads, queries (and jobs and policies)."""
