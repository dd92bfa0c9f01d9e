"""OAuth 2.0 token requests as every ERP source makes them: transport, retries, renewal clock.

Each source still chooses its grant (client credentials, refresh token), where the client
authenticates (HTTP Basic or the form body) and how a refusal is worded; what they share is
here. A token endpoint that is unreachable, throttles (429) or fails (5xx) raises
`RetryableError`, so `ErpHttpClient` retries the sign-in like any other request; a refusal is
an `ErpAuthError` that names the OAuth error code, never the secrets sent.
"""

from __future__ import annotations

import time

import requests
from oauthlib.oauth2 import BackendApplicationClient, Client, OAuth2Error
from requests.auth import AuthBase, HTTPBasicAuth

from erp_connector_dagster.erp.http import ErpAuthError, RetryableError, retry_after_seconds

# Renew a bearer token this long before it runs out rather than spend a request on a sure 401.
TOKEN_RENEWAL_MARGIN_SECONDS = 60.0


def request_token(
    session: requests.Session | None,
    url: str,
    *,
    data: dict[str, str] | str,
    auth: AuthBase | tuple[str, str] | None,
    timeout: float,
) -> requests.Response:
    """POST a token request; an answer the endpoint may give differently later is retried.

    With no `session` the request goes out on its own, without the session's headers.
    """
    post = session.post if session is not None else requests.post
    try:
        response = post(
            url,
            data=data,
            auth=auth,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=timeout,
        )
        # Read the body here so a connection dropped mid-body is retried too.
        _ = response.content
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as error:
        raise RetryableError(f"token request failed: {type(error).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(
            f"token endpoint answered {response.status_code}",
            wait_seconds=retry_after_seconds(response),
        )
    return response


def parse_token(
    oauth: Client, response: requests.Response, connection: str, scope: str | list | None = None
) -> dict:
    """The token oauthlib reads from the answer, or an `ErpAuthError` with the OAuth error code."""
    try:
        return oauth.parse_request_body_response(response.text, scope=scope)
    except (OAuth2Error, ValueError) as error:
        code = getattr(error, "error", None) or "unreadable answer"
        raise ErpAuthError(
            connection,
            f"token request refused ({response.status_code}): {code}",
            response.status_code,
        ) from None


def client_credentials_token(
    session: requests.Session | None,
    connection: str,
    url: str,
    *,
    client_id: str,
    client_secret: str,
    scope: str | list,
    timeout: float,
) -> dict:
    """The client-credentials grant with the client's id and secret in HTTP Basic."""
    oauth = BackendApplicationClient(client_id)
    response = request_token(
        session,
        url,
        data=oauth.prepare_request_body(scope=scope),
        auth=HTTPBasicAuth(client_id, client_secret),
        timeout=timeout,
    )
    return parse_token(oauth, response, connection, scope=scope)


def token_expires_at(token: dict, default_lifetime_seconds: float) -> float:
    """When a token runs out (epoch seconds): its `expires_at`, else now plus `expires_in`."""
    if token.get("expires_at"):
        return float(token["expires_at"])
    return time.time() + float(token.get("expires_in", default_lifetime_seconds))


def token_running_out(expires_at: float) -> bool:
    """Whether a token we hold (expires_at set) is inside the renewal margin."""
    return bool(expires_at) and expires_at - time.time() < TOKEN_RENEWAL_MARGIN_SECONDS
