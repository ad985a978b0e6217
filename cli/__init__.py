"""The `replaybank` console script: the one composition root. Commands import service or workers inside themselves."""
