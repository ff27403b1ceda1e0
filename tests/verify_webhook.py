"""Verifies one captured webhook delivery with the stock `standardwebhooks` library.

Reads {"secret": "whsec_...", "headers": {...}, "body": "..."} as JSON on stdin; exits 0
and prints the verified payload's type (or a Kling task's status) when the signature holds, non-zero otherwise.
tests/webhooks.rs runs it on a fresh delivery; CI installs the library (.ci/run).
"""
import json
import sys

from standardwebhooks import Webhook

captured = json.load(sys.stdin)
payload = Webhook(captured["secret"]).verify(captured["body"], captured["headers"])
# omnigate's events say their type; a Kling-shaped callback (tests/kling_facade.rs) is
# the task object, whose status stands for it.
print(payload.get("type") or payload["task_status"])
