"""The OpenAPI document as a contract: Schemathesis against a real `replaybank serve`."""
