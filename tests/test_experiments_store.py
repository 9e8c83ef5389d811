"""The run store: WAL mode, atomic claims with stale-owner takeover, concurrent writers, CSV export."""

import csv
import io
import os
import subprocess
import sys
import threading
import time

import pytest

from bioplausible.config import resolve
from bioplausible.errors import UserError
from bioplausible.experiments import Store, export_csv
from bioplausible.experiments import store as store_mod


def configs(n=3):
    return [resolve(rule="bp", seed=s, epochs=2) for s in range(n)]


def test_wal_mode_and_schema(tmp_path):
    with Store(tmp_path / "st") as st:
        assert st._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        st.add_runs("spec-a", configs(2))
        st.add_runs("spec-b", configs(3))  # overlapping: the shared runs are stored once
        assert len(st.runs()) == 3
        assert len(st.runs(spec="spec-a")) == 2 and len(st.runs(spec="spec-b")) == 3
        assert st.specs() == ["spec-a", "spec-b"]
        r = st.runs(seed=1)[0]
        assert r["hash"] == configs(2)[1].run_hash() and r["status"] == "pending"
        assert r["config"]["seed"] == 1 and r["dataset"] == "mnist"
    with pytest.raises(UserError, match="holds no run store"):
        Store(tmp_path / "nothing", create=False)


def test_claims_are_exclusive_and_dead_or_silent_owners_are_taken_over(tmp_path, monkeypatch):
    st = Store(tmp_path)
    h = configs(1)[0].run_hash()
    st.add_runs("s", configs(1))
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # p.pid is now a dead process on this host
    assert st.claim(h, pid=p.pid)
    assert st.claim(h)  # its owner is dead: taken over
    assert not st.claim(h, pid=os.getppid())  # we are alive: nobody else gets it
    assert st.claim(h)  # the owner itself may re-claim
    # another host's claim: stale only once its heartbeat is older than STALE_SECONDS
    st.release(h)
    assert st.get(h)["status"] == "interrupted"
    assert st.claim(h, pid=1, host="elsewhere")
    assert not st.claim(h)
    st._con.execute("UPDATE runs SET heartbeat = ? WHERE hash = ?", (time.time() - store_mod.STALE_SECONDS - 1, h))
    assert st.claim(h)
    # final runs are never claimed again
    st.finish(h, "completed", {"test_error": 0.1, "epochs": 2, "seconds": 1.0})
    assert not st.claim(h)
    row = st.get(h[:6])
    assert (row["status"], row["test_error"], row["epochs"], row["pid"]) == ("completed", 0.1, 2, None)


def test_concurrent_writers_lose_nothing(tmp_path):
    Store(tmp_path).add_runs("s", configs(4))
    hashes = [c.run_hash() for c in configs(4)]
    errors = []

    def writer(h):
        try:
            with Store(tmp_path) as st:  # its own connection, like another process
                for e in range(1, 41):
                    st.record_metrics(h, [{"epoch": i, "test_error": 1.0 / i, "train_loss": float(e)}
                                          for i in range(1, e + 1)])
                    st.heartbeat([h])
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(h,)) for h in hashes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store(tmp_path) as st:
        for h in hashes:
            m = st.metrics(h)
            assert [x["epoch"] for x in m] == list(range(1, 41))
            assert all(x["train_loss"] == 40.0 for x in m)
            assert st.get(h)["epochs"] == 40


def test_csv_export_has_one_row_per_run_and_every_config_field(tmp_path):
    st = Store(tmp_path)
    cs = configs(2)
    st.add_runs("s", cs)
    st.finish(cs[0].run_hash(), "failed", error="dataset not available: boom")
    rows = list(csv.DictReader(io.StringIO(export_csv(st.runs()))))
    assert len(rows) == 2
    by_hash = {r["hash"]: r for r in rows}
    assert by_hash[cs[0].run_hash()]["error"] == "dataset not available: boom"
    assert by_hash[cs[1].run_hash()]["status"] == "pending"
    assert by_hash[cs[1].run_hash()]["lr"] == "0.0005" and by_hash[cs[1].run_hash()]["hidden_sizes"] == "[800]"
