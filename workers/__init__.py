"""Workers: the HTTP client, training, collection and evaluation. Never imports `service`."""
