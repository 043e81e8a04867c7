"""How a post reaches the chat: Slack's Web API (messages and image uploads) or an incoming webhook.

Both raise :class:`ChatUnreachableError` (retryable: the outbox keeps the post and tries again
later) when the chat cannot be reached or asks to slow down beyond what the client's own retry
handler waits, and :class:`ChatRejectedError` (permanent: a bad token, an unknown channel) when
trying again cannot help. Tokens never appear in a message or a log line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cruncher.errors import PermanentError, RetryableError

_log = logging.getLogger(__name__)

#: Slack API errors that no retry can fix.
PERMANENT_SLACK_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked",
                          "channel_not_found", "not_in_channel", "is_archived", "missing_scope",
                          "invalid_arguments", "msg_too_long", "no_text"}


class ChatUnreachableError(RetryableError):
    """The chat service did not answer, or is rate limiting us: the post waits."""


class ChatRejectedError(PermanentError):
    """The chat service refused the post for good (bad token, unknown channel, ...)."""


@dataclass(frozen=True)
class Post:
    """One message for the chat, with an optional image."""

    text: str
    image: str | None = None            # a PNG to upload with the message
    title: str | None = None            # the image's title
    channel: str | None = None          # None: the configured channel
    thread_ts: str | None = None        # answer in a thread


class Transport(Protocol):
    def send(self, post: Post) -> None: ...


class SlackTransport:
    """Posts through ``slack_sdk.WebClient``; images via files.getUploadURLExternal +
    files.completeUploadExternal (one message carrying the image and the text)."""

    def __init__(self, token: str, channel: str, *, base_url: str | None = None,
                 max_rate_limit_retries: int = 2, timeout: float = 30.0) -> None:
        from slack_sdk import WebClient
        from slack_sdk.http_retry.builtin_handlers import (ConnectionErrorRetryHandler,
                                                           RateLimitErrorRetryHandler)

        kwargs = {"base_url": base_url} if base_url else {}
        self.client = WebClient(token=token, timeout=int(timeout), **kwargs)
        # the client itself waits what a 429's Retry-After asks, a few times, before giving up
        self.client.retry_handlers.extend([
            RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
            ConnectionErrorRetryHandler(max_retry_count=1)])
        self.channel = channel
        self._channel_ids: dict[str, str] = {}

    def check(self) -> dict:
        """``auth.test``: who the bot is (raises when the token is not accepted)."""
        return dict(self._call(self.client.auth_test).data)

    def send(self, post: Post) -> None:
        channel = post.channel or self.channel
        if post.image:
            self._call(self.client.files_upload_v2, file=post.image,
                       filename=Path(post.image).name, title=post.title or Path(post.image).name,
                       channel=self.channel_id(channel), initial_comment=post.text,
                       thread_ts=post.thread_ts)
        else:
            self._call(self.client.chat_postMessage, channel=channel, text=post.text,
                       thread_ts=post.thread_ts, unfurl_links=False)

    def channel_id(self, channel: str) -> str:
        """File uploads need a channel's ID: a name (``#observing``) is looked up once."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._channel_ids:
            cursor = None
            while True:
                page = self._call(self.client.conversations_list, limit=200, cursor=cursor,
                                  types="public_channel,private_channel")
                for c in page.get("channels", []):
                    self._channel_ids["#" + c["name"]] = c["id"]
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if channel in self._channel_ids or not cursor:
                    break
        if channel not in self._channel_ids:
            raise ChatRejectedError(f"channel {channel} not found (is the bot invited to it?)")
        return self._channel_ids[channel]

    @staticmethod
    def _call(method, **kwargs):
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            return method(**{k: v for k, v in kwargs.items() if v is not None})
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            status = exc.response.status_code if exc.response is not None else 0
            if error in PERMANENT_SLACK_ERRORS:
                raise ChatRejectedError(f"Slack refused: {error}") from None
            raise ChatUnreachableError(f"Slack answered {status} {error}".strip()) from None
        except (SlackClientError, OSError) as exc:
            raise ChatUnreachableError(f"Slack unreachable: {type(exc).__name__}: "
                                       f"{str(exc)[:200]}") from None


class WebhookTransport:
    """Posts to an incoming webhook (Slack or Mattermost): text only, so an image is named by
    its path on disk instead of uploaded."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
        from slack_sdk.webhook import WebhookClient

        self.client = WebhookClient(url, timeout=int(timeout),
                                    retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])

    def send(self, post: Post) -> None:
        text = post.text + (f"\n(image: {post.image})" if post.image else "")
        try:
            response = self.client.send(text=text)
        except OSError as exc:
            raise ChatUnreachableError(f"webhook unreachable: {type(exc).__name__}") from None
        if response.status_code in (400, 403, 404, 410):
            raise ChatRejectedError(f"webhook refused: {response.status_code} {response.body}")
        if response.status_code != 200:
            raise ChatUnreachableError(f"webhook answered {response.status_code}")
