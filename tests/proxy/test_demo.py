"""The node proxies on the demo cluster, with and without accel: `fastpath up --proxy
[--accel]` (`fastpath proxy demo`: a proxy per node on a VIP, a backend per pod), every
pod reaches the VIP and is answered by a pod anywhere in the cluster; `fastpath down`
stops every process it started."""

import json
import os
import time

import pytest

pytestmark = pytest.mark.root


def _processes_of(tag: str) -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if f"FASTPATH_INSTANCE={tag}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


@pytest.mark.parametrize("accel", [False, True])
def test_demo_cluster_node_proxies(fastpath, instance, accel):
    try:
        res = json.loads(fastpath("up", "--nodes", "2", "--pods", "2", "--proxy", "--json",
                                  *(["--accel"] if accel else [])).stdout)
        assert len(res["nodes"]) == 2
        res = res["proxy"]
        assert res["accel"] == accel
        assert res["ok"], res
        assert len(res["probes"]) == 4
        answers = {r["answer"].split()[0] for r in res["probes"]}
        assert len(answers) >= 2                      # round robin over the cluster's pods
        deadline = time.monotonic() + 5
        while True:  # workers refresh their status twice a second
            st = json.loads(fastpath("proxy", "status", "--json").stdout)["proxies"]
            if sum(p["services"][0]["accepted"] for p in st) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(p["name"] for p in st) == ["node1", "node2"]
        assert sum(p["services"][0]["accepted"] for p in st) >= 4
        accel_sockets = sum(p["counters"].get("accel_sockets", 0) for p in st)
        if accel:   # the proxies saw their sockets in the sockhash and copied on them
            assert accel_sockets >= 4
            assert sum(p["counters"].get("bytes_spliced", 0) for p in st) == 0
        else:
            assert accel_sockets == 0
        again = fastpath("proxy", "demo", check=False)
        assert again.returncode == 2 and "already runs" in again.stderr
    finally:
        fastpath("down")
    assert not [p for p in _processes_of(instance) if "pytest" not in p]
