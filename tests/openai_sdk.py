"""The official OpenAI Python SDK, unmodified, against omnigate's /v1/videos facade.

Usage: python3 tests/openai_sdk.py BASE_URL API_KEY
Creates a video, polls it to completion, lists it, downloads its content, asserting on
each answer; prints one JSON line (id, size and SHA-256 of the content) for the Rust test
(tests/openai_facade.rs) to compare with what the provider served.
"""

import hashlib
import json
import sys
import time
import warnings

import openai
from openai import OpenAI

# The SDK marks the Sora endpoints deprecated; that is OpenAI's service, not this API.
warnings.simplefilter("ignore", DeprecationWarning)


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    video = client.videos.create(
        model="kling-v3-omni",
        prompt="a paper boat drifting down a rainy street",
        seconds="5",
        size="1280x720",
    )
    assert video.object == "video", video
    assert video.id.startswith("vgt_"), video
    assert video.status in ("queued", "in_progress"), video
    assert video.model == "kling-v3-omni", video
    assert video.seconds == "5", video
    assert video.size == "1280x720", video
    assert isinstance(video.created_at, int), video

    deadline = time.time() + 60
    while video.status not in ("completed", "failed"):
        assert time.time() < deadline, f"not finished in 60 s: {video}"
        time.sleep(0.2)
        video = client.videos.retrieve(video.id)
    assert video.status == "completed", video
    assert video.progress == 100, video
    assert video.error is None, video
    assert isinstance(video.completed_at, int) and video.completed_at >= video.created_at, video

    page = client.videos.list(limit=10, order="desc")
    assert [v.id for v in page.data][:1] == [video.id], page
    assert page.data[0].status == "completed", page
    assert page.has_more is False, page
    assert page.last_id == video.id, page

    content = client.videos.download_content(video.id)
    data = content.read()
    assert len(data) > 1000, len(data)
    assert data[4:8] == b"ftyp", data[:16]

    # An unknown video is the SDK's NotFoundError, from omnigate's error envelope.
    try:
        client.videos.retrieve("vgt_does_not_exist")
        raise AssertionError("an unknown video was found")
    except openai.NotFoundError as e:
        assert e.status_code == 404

    # A bad size is a 400 naming the field.
    try:
        client.videos.create(model="kling-v3-omni", prompt="x", size="640x480")
        raise AssertionError("a bad size was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "size", e.body

    print(json.dumps({"id": video.id, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


if __name__ == "__main__":
    main()
