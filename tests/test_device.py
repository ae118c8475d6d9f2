"""Thread sizing: the cores a process may use include a cgroup CPU quota,
which containers set and CPU affinity does not show."""
from __future__ import annotations

import pytest

from nas import device


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path, text):
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(text)
    return str(proc)


def test_v2_quota_is_quota_over_period(tmp_path):
    _write(tmp_path / "cg" / "cpu.max", "150000 100000\n")
    assert device.cgroup_cpu_quota(str(tmp_path / "cg"), _proc(tmp_path, "0::/\n")) == 1.5


def test_v2_max_means_no_quota(tmp_path):
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    assert device.cgroup_cpu_quota(str(tmp_path / "cg"), _proc(tmp_path, "0::/\n")) is None


def test_v2_tightest_of_cgroup_and_ancestors_wins(tmp_path):
    root = tmp_path / "cg"
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "cpu.max", "300000 100000\n")
    _write(root / "kubepods" / "pod1" / "cpu.max", "400000 100000\n")
    proc = _proc(tmp_path, "0::/kubepods/pod1\n")
    assert device.cgroup_cpu_quota(str(root), proc) == 3.0


def test_v1_quota_and_unlimited(tmp_path):
    root = tmp_path / "cg"
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "50000\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    proc = _proc(tmp_path, "5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert device.cgroup_cpu_quota(str(root), proc) == 0.5
    unlimited = _proc(tmp_path, "3:cpu,cpuacct:/\n")
    assert device.cgroup_cpu_quota(str(root), unlimited) is None


def test_hybrid_mode_reads_the_unified_mount(tmp_path):
    root = tmp_path / "cg"
    _write(root / "unified" / "cpu.max", "200000 100000\n")
    assert device.cgroup_cpu_quota(str(root), _proc(tmp_path, "1:cpu:/\n0::/\n")) == 2.0


def test_no_cgroup_information_means_no_quota(tmp_path):
    assert device.cgroup_cpu_quota(str(tmp_path), str(tmp_path / "missing")) is None
    _write(tmp_path / "cg" / "cpu.max", "garbage\n")
    assert device.cgroup_cpu_quota(str(tmp_path / "cg"), _proc(tmp_path, "0::/\n")) is None


@pytest.mark.parametrize("quota, expected", [(None, 8), (2.5, 2), (0.5, 1), (16.0, 8)])
def test_available_cores_is_affinity_capped_by_quota(monkeypatch, quota, expected):
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(device, "cgroup_cpu_quota", lambda: quota)
    assert device.available_cores() == expected


def test_configure_threads_divides_cores_among_workers(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(device, "available_cores", lambda: 6)
    try:
        assert device.configure_threads(workers=4) == 1
        assert torch.get_num_threads() == 1
        assert device.configure_threads(workers=2) == 3
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


class _FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_allocator_keeps_freed_memory(monkeypatch):
    for key in [k for k in device.os.environ if k.startswith(("MALLOC_", "GLIBC_TUNABLES")) or k == "LD_PRELOAD"]:
        monkeypatch.delenv(key)
    libc = _FakeLibc()
    assert device.configure_allocator(libc)
    # mmap threshold, trim threshold, top pad: none left at glibc's default
    assert dict(libc.calls) == {-3: 256 << 20, -1: 1 << 30, -2: 64 << 20}
    with pytest.raises(device.NasError, match="mallopt"):
        device.configure_allocator(_FakeLibc(answer=0))
    monkeypatch.setenv("NAS_MALLOC", "always")
    with pytest.raises(device.NasError, match="NAS_MALLOC: 'always' is not one of keep, system"):
        device.configure_allocator(_FakeLibc())


@pytest.mark.parametrize("env", [("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"), ("MALLOC_ARENA_MAX", "2"), ("NAS_MALLOC", "system"),
                                 ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_allocator_left_alone_when_the_user_chose_one(monkeypatch, env):
    monkeypatch.setenv(*env)
    libc = _FakeLibc()
    assert not device.configure_allocator(libc)
    assert libc.calls == []


def test_allocator_is_configured_for_real_on_linux_glibc(monkeypatch):
    import platform
    import sys

    for key in [k for k in device.os.environ if k.startswith(("MALLOC_", "GLIBC_TUNABLES")) or k == "LD_PRELOAD"]:
        monkeypatch.delenv(key)
    expected = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert device.configure_allocator() is expected
