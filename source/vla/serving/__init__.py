"""Serving a VLA checkpoint to remote clients in openpi's websocket protocol (see docs/serving.md).

codec (msgpack + numpy, never unpickles) -> observation (validation, openpi key aliases) -> batcher
(worker thread, micro-batching) -> runner (``predict_action``); server ties them to websockets with
authentication, size limits and health checks; client is the matching synchronous client.
"""
