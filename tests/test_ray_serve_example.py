"""examples/ray_serve: a real local Ray cluster serves the locked model from 2 replicas over HTTP.

Skips without the serve extra (`pip install '.[serve]'`); CI does not install it.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import keygen, lock_model

from conftest import MODELS

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient  # noqa: E402  (the dashboard's Serve REST API)
from ray.util import state  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "ray_serve"))
import serve_locked  # noqa: E402

CNN = MODELS / "digits_cnn.onnx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """digits_cnn locked for a fresh identity, served as /locked by 2 replicas on a local cluster."""
    folder = tmp_path_factory.mktemp("ray_serve")
    keygen(folder / "device")
    locked = lock_model(CNN, recipients=[folder / "device.pub"], tries=1, seed=0)
    identity = (folder / "device").read_bytes()
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=free_port(),
                       object_store_memory=100 * 2**20, log_to_driver=False,
                       runtime_env=serve_locked.runtime_env())
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve_locked.deploy("locked", locked.model, locked.key, identity, replicas=2, cpus=0.5)
        yield {"url": f"http://127.0.0.1:{port}/locked", "identity": identity, "context": context, "locked": locked,
               "folder": folder}
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_http_bit_identical_to_the_original(served, digits):
    replicas = serve.status().applications["locked"].deployments["OnnxModel"].replica_states
    assert replicas == {"RUNNING": 2}
    original = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"])
    with requests.Session() as client:
        for batch in np.array_split(digits["pixels"], 8):
            feeds = {"pixels": batch}
            expected = dict(zip(["logits"], original.run(None, feeds)))
            response = client.post(served["url"], json=serve_locked.request_body(feeds), timeout=30)
            assert response.status_code == 200
            got = serve_locked.decode_outputs(response.json(), expected)
            assert got["logits"].shape == (len(batch), 10)
            assert got["logits"].tobytes() == expected["logits"].tobytes()


def test_a_bad_request_gets_a_400_naming_the_input(served):
    response = requests.post(served["url"], json={"pixels": [[1.0, 2.0]]}, timeout=30)
    assert response.status_code == 400
    assert "input 'pixels' expects float32 [batch, 1, 8, 8]" in response.json()["error"]


def test_the_identity_is_in_no_ray_listing_nor_log(served):
    private = served["identity"].split(b'"private":"')[1][:43].decode()  # the key's base64, not the public half
    dashboard = ServeSubmissionClient("http://" + served["context"].dashboard_url)
    listings = [repr(state.list_actors(detail=True)), repr(state.list_runtime_envs(detail=True)),
                repr(serve.status()), repr(dashboard.get_serve_details())]
    assert "ServeReplica:locked:OnnxModel" in listings[0] and "OnnxModel" in listings[-1]  # they are real
    assert not [text for text in listings if private in text]
    session = Path(served["context"].address_info["session_dir"])
    leaked = [path for path in session.rglob("*") if path.is_file() and private.encode() in path.read_bytes()]
    assert leaked == []


def test_a_wrong_identity_fails_the_deployment_with_the_key_error(served):
    keygen(served["folder"] / "stranger")
    locked = served["locked"]
    with pytest.raises(RuntimeError, match="'wrong' did not start: .*KeyAuthError: the key is not for this identity"):
        serve_locked.deploy("wrong", locked.model, locked.key, (served["folder"] / "stranger").read_bytes(),
                            replicas=1, cpus=0.5)
