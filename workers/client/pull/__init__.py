"""The pull path: a dataset version from the service into one Arrow table, as fast as the wire allows.

pulls.py     the client's pull methods (`Pulls`): manifest, missing files, fetching several at once, resuming
cache.py     `FileCache`: the local content-addressed store of immutable files (verify, then rename into place)
download.py  bodies read straight into memory, and `BulkDownloader` for large files (http.client, not httpx)
decode.py    Parquet decoded column chunk by column chunk, also while the file still downloads
parquet_lists.py  fixed-size list columns read straight from Parquet pages (pyarrow's list reader is slow)
"""
