"""The Ray backend on a real local Ray instance gives the same results as the local process pool."""

import pytest

ray = pytest.importorskip("ray")

from bioplausible.experiments import Store, load_spec, sweep  # noqa: E402


def have_data():
    from bioplausible.data import dataset_status

    found = {r["name"] for r in dataset_status(verify_content=False) if r["found"]}
    return {"mnist", "fashion-mnist"} <= found


@pytest.mark.skipif(not have_data(), reason="needs MNIST and Fashion-MNIST")
def test_quick_spec_on_ray_equals_local_backend(tmp_path):
    spec = load_spec("quick")
    with Store(tmp_path / "local") as local:
        res_local = sweep(spec, local, backend="local", workers=2, progress=False)
        want = {r["hash"]: (r["status"], r["test_error"], [m["train_loss"] for m in local.metrics(r["hash"])])
                for r in local.runs()}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with Store(tmp_path / "ray") as st:
            res_ray = sweep(spec, st, backend="ray", workers=2, progress=False)
            got = {r["hash"]: (r["status"], r["test_error"], [m["train_loss"] for m in st.metrics(r["hash"])])
                   for r in st.runs()}
            # the results came back to the driver's store and run directories
            assert all((st.run_dir(h) / "summary.json").is_file() for h in got)
    finally:
        ray.shutdown()
    assert res_local["ran"] == res_ray["ran"] == len(spec.runs) == 20
    assert res_ray["failed"] == 0
    assert got == want
    assert all(status == "completed" and len(losses) == 3 for status, _, losses in got.values())
