"""Serve a locked ONNX model with Ray Serve: every replica restores it in memory with onnxlock.

Each replica gets the locked model, its key and the identity that opens the key as deployment
init arguments (bytes), and calls ``onnxlock.load_session``; the restored model exists only in
that replica's memory. Requests are HTTP POSTs of JSON, one array per model input named after it
(``{"pixels": [[[[0.0, ...]]]]}``); the answer holds one array per output (``{"logits": [[...]]}``).
float32 values survive the JSON round trip exactly, so the answers are bit-identical to a local
onnxruntime session on the original model.

Why an init argument and not ``runtime_env={"env_vars": ...}``: Ray has no secret store, and
runtime_env env vars are shown in clear by ``ray list actors --detail``, ``ray list runtime-envs``
and the Serve REST API behind the dashboard, written to the runtime_env agent's log, and inherited
by every child process. Init arguments are pickled into the Serve controller's state (to restart
replicas) and shown or logged by none of those. Where you provision the nodes (a Kubernetes
Secret mounted in every Ray pod), pass the identity's *path on the nodes* instead: then Ray never
carries the secret at all.

    python examples/ray_serve/serve_locked.py m.locked.onnx --key m.key --identity device1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

CHECKOUT = Path(__file__).resolve().parents[2]
if (CHECKOUT / "onnxlock").is_dir():
    sys.path.insert(0, str(CHECKOUT))  # run from a checkout: its onnxlock, not an installed one

import onnxlock  # noqa: E402
from onnxlock.errors import InputDataError  # noqa: E402
from onnxlock.runtime.feeds import check_feeds, input_specs  # noqa: E402

Source = bytes | str  # a file's contents, or a path on the replica's node


@serve.deployment
class OnnxModel:
    """One onnxruntime session per replica: the plain ``model``, or the locked one opened with
    ``key`` and ``identity`` (used here once; this class keeps only the session)."""

    def __init__(self, model: Source, key: Source | None = None, identity: Source | None = None,
                 threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if key is None:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        else:
            self.session = onnxlock.load_session(model, key, identity=identity, providers="cpu",
                                                 sess_options=options)
        self.inputs = input_specs(self.session)
        self.outputs = [output.name for output in self.session.get_outputs()]

    async def __call__(self, request: Request):
        try:
            feeds = self.feeds(await request.json())
        except (ValueError, TypeError, InputDataError) as exc:  # bad JSON, ragged or mistyped arrays
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        results = self.session.run(self.outputs, feeds)
        return {name: value.tolist() for name, value in zip(self.outputs, results)}

    def feeds(self, body: object) -> dict[str, np.ndarray]:
        if not isinstance(body, dict):
            raise InputDataError("the request must be a JSON object with one array per model input")
        arrays = {spec.name: np.asarray(body[spec.name], dtype=spec.dtype)
                  for spec in self.inputs if spec.name in body}
        return check_feeds(arrays, self.inputs, source="the request")[0]


def runtime_env() -> dict:
    """The job runtime_env for ``ray.init``: ships this checkout's onnxlock and this module to the
    replicas (the cluster needs onnxruntime, onnx, onnx-graphsurgeon, cryptography and numpy)."""
    return {"py_modules": [str(Path(onnxlock.__file__).parent), __file__]}


def application(model: Source, key: Source | None = None, identity: Source | None = None, *,
                replicas: int = 2, cpus: float = 1.0) -> serve.Application:
    """The deployment bound to its arguments, ``replicas`` replicas of ``cpus`` CPUs each."""
    return OnnxModel.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus}).bind(model, key, identity)


def deploy(name: str, model: Source, key: Source | None = None, identity: Source | None = None, *,
           replicas: int = 2, cpus: float = 1.0) -> float:
    """Run the app ``name`` at ``/name`` and wait until its replicas are up; return the seconds taken.
    If they cannot start (a wrong identity...), raise RuntimeError with the replicas' last error line."""
    start = time.perf_counter()
    try:
        serve.run(application(model, key, identity, replicas=replicas, cpus=cpus), name=name, route_prefix=f"/{name}")
    except RuntimeError:
        messages = [d.message for d in serve.status().applications[name].deployments.values() if d.message.strip()]
        raise RuntimeError(f"application {name!r} did not start: "
                           + (messages[-1].strip().splitlines()[-1] if messages else "see the Serve logs")) from None
    return time.perf_counter() - start


def request_body(feeds: dict[str, np.ndarray]) -> dict:
    """The JSON body for ``feeds`` (exact for float32: a float64 repr round-trips it)."""
    return {name: array.tolist() for name, array in feeds.items()}


def decode_outputs(body: dict, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a JSON answer, in the dtypes of ``like`` (e.g. a local session's outputs)."""
    return {name: np.asarray(body[name], dtype=reference.dtype) for name, reference in like.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the locked model (or a plain one, without --key)")
    parser.add_argument("--key", help="the key of the locked model")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--identity", help="identity file here: its contents go to the replicas as an init argument")
    who.add_argument("--identity-on-nodes", metavar="PATH",
                     help="identity file already present at PATH on every node (Ray never carries it)")
    parser.add_argument("--name", default="locked", help="application name and route (default: locked)")
    parser.add_argument("--address", help="'auto' on a node of a cluster, ray://HEAD:10001 from outside, 'local' for a"
                                          " new local one (default: $RAY_ADDRESS, else the cluster last started on"
                                          " this machine, else a new local one)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host when this starts Serve (0.0.0.0: any)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port when this starts Serve (default 8000)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--detach", action="store_true", help="deploy and exit, leaving the app running")
    args = parser.parse_args(argv)
    if args.key and not (args.identity or args.identity_on_nodes):
        parser.error("--key needs --identity or --identity-on-nodes")
    identity = Path(args.identity).read_bytes() if args.identity else args.identity_on_nodes
    ray.init(address=args.address, runtime_env=runtime_env())
    serve.start(http_options={"host": args.host, "port": args.port})
    key = Path(args.key).read_bytes() if args.key else None
    try:
        seconds = deploy(args.name, Path(args.model).read_bytes(), key, identity, replicas=args.replicas)
    except RuntimeError as exc:
        print(f"serve_locked: error: {exc}", file=sys.stderr)
        return 1
    del identity
    print(f"{args.name}: {args.replicas} replicas up in {seconds:.1f} s, POST JSON to "
          f"http://<host>:{args.port}/{args.name}", flush=True)
    if args.detach:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
