"""A client as Kling's documentation writes one (a JWT from the access and secret keys,
`requests`, the create and query calls), run unchanged against omnigate: only the base
URL and the two keys differ. tests/kling_facade.rs runs it and reads the JSON report on
its last line.

Usage: kling_client.py BASE_URL ACCESS_KEY SECRET_KEY
"""
import json
import sys
import time

import jwt
import requests

base_url, ak, sk = sys.argv[1], sys.argv[2], sys.argv[3]


def encode_jwt_token(ak, sk):
    headers = {"alg": "HS256", "typ": "JWT"}
    payload = {
        "iss": ak,
        "exp": int(time.time()) + 1800,  # valid for 30 minutes
        "nbf": int(time.time()) - 5,  # valid from 5 seconds ago
    }
    return jwt.encode(payload, sk, headers=headers)


api_token = encode_jwt_token(ak, sk)
headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_token}"}

# The create, as in Kling's example request.
body = {
    "model_name": "kling-video-o1",
    "prompt": "Generate an image of dancing by the seaside.",
    "negative_prompt": "",
    "mode": "std",
    "element_list": [{"element_id": 835266081714884677}],
    "aspect_ratio": "16:9",
    "duration": "5",
    "callback_url": "",
    "external_task_id": "seaside-dance-1",
}
resp = requests.post(f"{base_url}/v1/videos/omni-video", headers=headers, json=body, timeout=30)
created = resp.json()
assert resp.status_code == 200 and created["code"] == 0, created
task_id = created["data"]["task_id"]

# The query, until the task is done.
deadline = time.time() + 30
while True:
    resp = requests.get(f"{base_url}/v1/videos/omni-video/{task_id}", headers=headers, timeout=30)
    task = resp.json()
    assert task["code"] == 0, task
    status = task["data"]["task_status"]
    if status in ("succeed", "failed"):
        break
    assert time.time() < deadline, task
    time.sleep(0.2)

by_external = requests.get(
    f"{base_url}/v1/videos/omni-video/seaside-dance-1", headers=headers, timeout=30
).json()
listed = requests.get(
    f"{base_url}/v1/videos/omni-video",
    headers=headers,
    params={"pageNum": 1, "pageSize": 30},
    timeout=30,
).json()

videos = task["data"]["task_result"].get("videos") or [{}]
print(
    json.dumps(
        {
            "create_code": created["code"],
            "task_id": task_id,
            "final_status": status,
            "video_url": videos[0].get("url"),
            "by_external_id": by_external["data"]["task_id"],
            "listed": any(t["task_id"] == task_id for t in listed["data"]),
        }
    )
)
