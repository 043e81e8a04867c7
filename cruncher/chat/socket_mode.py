"""Questions from Slack through Socket Mode: the bot opens the connection, so no public endpoint.

Every envelope is acknowledged at once (Slack redelivers what is not); mentions of the bot, and
direct messages to it, are handed to ``on_message(text, channel=..., thread_ts=...)``. The bot's own
messages and redeliveries of an event already seen are ignored.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

_log = logging.getLogger(__name__)


def listen(app_token: str, web_client, on_message: Callable[..., object]):
    """Connect and start answering; returns the connected ``SocketModeClient`` (close() it)."""
    from slack_sdk.socket_mode import SocketModeClient
    from slack_sdk.socket_mode.response import SocketModeResponse

    seen: deque[str] = deque(maxlen=1000)

    def process(client, request) -> None:
        if request.envelope_id:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "events_api":
            return
        payload = request.payload or {}
        event = payload.get("event") or {}
        event_id = payload.get("event_id") or event.get("client_msg_id") or event.get("ts")
        if event_id in seen or event.get("bot_id") or event.get("subtype"):
            return
        seen.append(event_id)
        direct = event.get("type") == "message" and event.get("channel_type") == "im"
        if event.get("type") == "app_mention" or direct:
            _log.info("asked in %s: %.120s", event.get("channel"), event.get("text", ""))
            on_message(event.get("text", ""), channel=event.get("channel"),
                       thread_ts=event.get("thread_ts"))

    client = SocketModeClient(app_token=app_token, web_client=web_client)
    client.socket_mode_request_listeners.append(process)
    client.connect()
    return client
