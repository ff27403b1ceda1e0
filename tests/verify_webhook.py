"""Verifies one captured webhook delivery with the stock `standardwebhooks` library.

Reads {"secret": "whsec_...", "headers": {...}, "body": "..."} as JSON on stdin; exits 0
and prints the verified payload's type when the signature holds, non-zero otherwise.
tests/webhooks.rs runs it on a fresh delivery; CI installs the library (.ci/run).
"""
import json
import sys

from standardwebhooks import Webhook

captured = json.load(sys.stdin)
payload = Webhook(captured["secret"]).verify(captured["body"], captured["headers"])
print(payload["type"])
