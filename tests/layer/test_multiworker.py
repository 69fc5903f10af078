"""synchronized=True across two worker processes (MultiWorkerMirroredStrategy).

Two workers on 127.0.0.1 each take half of a batch and run one training step
of a synchronized layer; their outputs, input gradients, summed γ/β gradients
and moving statistics must equal one process normalizing the whole batch.
The workers are separate Python processes talking gRPC over loopback, with a
hard time limit after which both are killed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests.helpers.layers import assert_close, random_bn_weights, train_step

SHAPE = (8, 3, 3, 4)
WORKERS = 2
TIMEOUT_S = 180

WORKER = textwrap.dedent(
    """
    import sys

    import numpy as np
    import tensorflow as tf

    import keras_bn

    data_path, index, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = np.load(data_path)
    weights = [data[f"w{i}"] for i in range(int(data["n_weights"]))]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    half = len(data["x"]) // 2
    rows = slice(index * half, (index + 1) * half)
    x = tf.constant(data["x"][rows])
    upstream = tf.constant(data["upstream"][rows])
    with strategy.scope():
        layer = keras_bn.BatchNormalization(synchronized=True, momentum=0.5)
        layer.build(data["x"].shape)
    layer.set_weights(weights)

    def replica_step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(upstream * y)
        return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

    step = tf.function(lambda x, u: strategy.run(replica_step, args=(x, u)))
    y, dx, d_gamma, d_beta = (t.numpy() for t in step(x, upstream))
    np.savez(
        out_path, y=y, dx=dx, d_gamma=d_gamma, d_beta=d_beta,
        moving_mean=layer.moving_mean.numpy(),
        moving_variance=layer.moving_variance.numpy(),
    )
    """
)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(tmp_path, data_path) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(WORKERS)]}
    processes = []
    for index in range(WORKERS):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), str(data_path), str(index)]
                + [str(tmp_path / f"out{index}.npz")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        for process in processes:
            process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {TIMEOUT_S} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, process in enumerate(processes):
        log = (tmp_path / f"worker{index}.log").read_text()[-3000:]
        assert process.returncode == 0, f"worker {index} failed:\n{log}"
    return [dict(np.load(tmp_path / f"out{i}.npz")) for i in range(WORKERS)]


def test_two_workers_equal_one_process_on_the_whole_batch(rng, tmp_path):
    # A large mean: the combination must be exact, not raw sums of squares.
    x = rng.normal(1e3, 2.0, SHAPE).astype("float32")
    upstream = rng.normal(size=SHAPE).astype("float32")
    single = keras_bn.BatchNormalization(momentum=0.5)
    single.build(SHAPE)
    weights = random_bn_weights(single, rng)
    single.set_weights(weights)
    data_path = tmp_path / "data.npz"
    np.savez(
        data_path,
        x=x,
        upstream=upstream,
        n_weights=len(weights),
        **{f"w{i}": w for i, w in enumerate(weights)},
    )

    workers = _run_workers(tmp_path, data_path)
    expected = train_step(single, tf.constant(x), tf.constant(upstream))

    assert_close(np.concatenate([w["y"] for w in workers]), expected[0])
    assert_close(np.concatenate([w["dx"] for w in workers]), expected[1])
    # Each worker holds its own part of dγ, dβ; the optimizer sums them.
    assert_close(sum(w["d_gamma"] for w in workers), expected[2])
    assert_close(sum(w["d_beta"] for w in workers), expected[3])
    for w in workers:
        assert_close(w["moving_mean"], single.moving_mean.numpy())
        assert_close(w["moving_variance"], single.moving_variance.numpy())
