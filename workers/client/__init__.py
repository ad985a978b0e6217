"""The HTTP client of replaybank: one `ReplaybankClient` for users, the command line and workers.

Each module adds the endpoints of one idea to a shared core, and `ReplaybankClient` composes them:

http.py      `ClientCore`: the connection, `_request` (token, retries, error envelopes), `ReplaybankError`
datasets.py  datasets, versions, tags, SQL queries
uploads.py   appending rows or a transition file as one version; the body encoders
pull/        a version's files through the local cache into one Arrow table (the pull path)
jobs.py      submitting and following jobs, and the worker protocol (claim, heartbeat, checkpoints, finish)
policies.py  the policy registry and policy downloads
sweeps.py    sweeps of train jobs and their leaderboards
tokens.py    API tokens (admin)
"""

from __future__ import annotations

from workers.client.http import CONTENT_TYPES, Progress, ReplaybankError, Version
from workers.client.jobs import Jobs
from workers.client.policies import Policies
from workers.client.pull.pulls import PulledFiles, Pulls
from workers.client.sweeps import Sweeps
from workers.client.tokens import Tokens
from workers.client.uploads import UploadedFile, Uploads


class ReplaybankClient(Uploads, Pulls, Jobs, Policies, Sweeps, Tokens):
    """A client of one service: `ReplaybankClient(url, token, cache=..., timeout=..., retries=...)`.

    Use it as a context manager (or call `close`) to release its connections.
    """


__all__ = ["CONTENT_TYPES", "Progress", "PulledFiles", "ReplaybankClient", "ReplaybankError", "UploadedFile", "Version"]
