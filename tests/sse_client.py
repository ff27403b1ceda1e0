"""Follows a task's status stream with the stock `sseclient-py` client (over `requests`),
as a client of omnigate would: reads it to its end, then resumes it with the first
event's id as Last-Event-ID. Prints one JSON line: the events of each connection.

Usage: sse_client.py BASE_URL API_KEY TASK_ID
"""

import json
import sys

import requests
import sseclient


def follow(base, key, task_id, last_event_id=None):
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    resp = requests.get(
        f"{base}/v1/video/generations/{task_id}/stream",
        headers=headers,
        stream=True,
        timeout=30,
    )
    resp.raise_for_status()
    events = []
    for event in sseclient.SSEClient(resp).events():
        data = json.loads(event.data)
        events.append({"event": event.event, "id": event.id, "status": data["status"],
                       "task": data["id"]})
    return events


def main():
    base, key, task_id = sys.argv[1:4]
    first = follow(base, key, task_id)
    resumed = follow(base, key, task_id, first[0]["id"]) if first else []
    print(json.dumps({"first": first, "resumed": resumed}))


if __name__ == "__main__":
    main()
