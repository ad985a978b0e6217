"""API tokens (admin scope): create one (its secret comes back once), list them, revoke one."""

from __future__ import annotations

from schemas.tokens import TokenCreated, TokenPublic
from workers.client.http import ClientCore, segment


class Tokens(ClientCore):
    def create_token(self, name: str, scopes: list[str]) -> TokenCreated:
        return self._model(TokenCreated, "POST", "/v1/tokens", json={"name": name, "scopes": scopes})

    def list_tokens(self) -> list[TokenPublic]:
        return self._paginate(TokenPublic, "/v1/tokens")

    def revoke_token(self, token_id_or_name: str) -> None:
        self._request("DELETE", f"/v1/tokens/{segment(token_id_or_name)}")
