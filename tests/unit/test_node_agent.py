"""The node agent: NVML through the adapter (a fake with pynvml's shapes and error codes),
cgroup parsing for both versions and every runtime, attribution to pods (two pods on one
time-sliced GPU), the exposition Prometheus reads, and the agent's loop and endpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any

import pynvml
import pytest
import yaml
from prometheus_client import parser

from gpu_rightsizer.agent import pods as pod_directory, running, serving
from gpu_rightsizer.fleetsim import nvml as fake_nvml
from gpu_rightsizer.nodeusage import attribution, cgroups, exposition, readings
from gpu_rightsizer.nvml import reader

GIB = 1 << 30
UID_A = "1f0c2b7e-3d4a-4b5c-8d9e-0a1b2c3d4e5f"
UID_B = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
CID_A = "a" * 64
CID_B = "b" * 64
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"


# --- cgroups ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "uid", "container", "runtime"),
    [
        pytest.param(
            "0::/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_A}.scope\n",
            UID_A,
            CID_A,
            "containerd",
            id="v2-systemd-containerd",
        ),
        pytest.param(
            f"0::/kubepods/burstable/pod{UID_A}/{CID_A}\n",
            UID_A,
            CID_A,
            None,
            id="v2-cgroupfs",
        ),
        pytest.param(
            "0::/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{UID_B.replace('-', '_')}.slice/crio-{CID_B}.scope\n",
            UID_B,
            CID_B,
            "cri-o",
            id="v2-systemd-crio",
        ),
        pytest.param(
            f"0::/kubepods.slice/kubepods-pod{UID_A.replace('-', '_')}.slice/"
            f"cri-containerd-{CID_A}.scope\n",
            UID_A,
            CID_A,
            "containerd",
            id="v2-guaranteed",
        ),
        pytest.param(
            "0::/../../kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_A}.scope\n",
            UID_A,
            CID_A,
            "containerd",
            id="v2-other-cgroup-namespace",
        ),
        pytest.param(
            f"12:pids:/kubepods/burstable/pod{UID_B}/{CID_B}\n"
            f"11:memory:/kubepods/burstable/pod{UID_B}/{CID_B}\n"
            f"4:cpu,cpuacct:/kubepods/burstable/pod{UID_B}/{CID_B}\n"
            f"1:name=systemd:/kubepods/burstable/pod{UID_B}/{CID_B}\n",
            UID_B,
            CID_B,
            None,
            id="v1-cgroupfs",
        ),
        pytest.param(
            "10:devices:/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID_B.replace('-', '_')}.slice/docker-{CID_B}.scope\n"
            "1:name=systemd:/system.slice/docker.service\n",
            UID_B,
            CID_B,
            "docker",
            id="v1-systemd-docker",
        ),
        pytest.param(
            f"0::/system.slice/containerd.service/kubepods-burstable-pod{UID_A.replace('-', '_')}"
            f".slice:cri-containerd:{CID_A}\n",
            None,
            None,
            None,
            id="not-a-kubelet-path",
        ),
        pytest.param(
            f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
            f"kubelet-kubepods-burstable-pod{UID_A.replace('-', '_')}.slice/"
            f"cri-containerd-{CID_A}.scope\n",
            UID_A,
            CID_A,
            "containerd",
            id="v2-nested-kind",
        ),
        pytest.param(
            f"0::/kubepods/besteffort/pod{UID_A}\n", UID_A, None, None, id="pod-without-container"
        ),
        pytest.param("0::/system.slice/nvidia-persistenced.service\n", None, None, None, id="host"),
        pytest.param("", None, None, None, id="empty"),
    ],
)
def test_cgroup_paths_of_every_shape_name_the_pod_and_container(
    text: str, uid: str | None, container: str | None, runtime: str | None
) -> None:
    found = cgroups.parse(text)
    if uid is None:
        assert found is None or found.pod_uid != UID_A
        return
    assert found == cgroups.PodCgroup(uid, container, runtime)


def test_a_uid_must_be_whole() -> None:
    assert cgroups.parse("0::/kubepods/burstable/pod1234/abc\n") is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (f"containerd://{CID_A}", CID_A),
        (f"cri-o://{CID_B}", CID_B),
        (f"docker://{CID_A}", CID_A),
        ("containerd://short", None),
        ("", None),
    ],
)
def test_container_ids_of_pod_statuses(status: str, expected: str | None) -> None:
    assert cgroups.container_id(status) == expected


# --- the fake NVML through the adapter --------------------------------------------------------


def gpu(uuid: str, name: str = H100, **extra: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": name,
        "memory": {"total": 80 * GIB, "used": 30 * GIB, "reserved": GIB // 2},
        "utilization": {"gpu": 40, "memory": 25},
        "powerMilliwatts": 310_000,
        "energyMillijoules": 9_000_000,
        **extra,
    }


def node(*gpus: dict[str, Any], **extra: Any) -> fake_nvml.FakeNvml:
    return fake_nvml.FakeNvml({"driverVersion": "580.95.05", "gpus": list(gpus), **extra})


def test_a_whole_gpu_is_read_in_the_units_of_its_field_names() -> None:
    nvml = node(gpu("GPU-0", processes=[{"pid": 10, "usedGpuMemory": 20 * GIB, "smUtil": 35}]))
    reading = reader.Reader(nvml).read()
    assert reading.ok and reading.errors == ()
    assert reading.driver_version == "580.95.05"
    (device,) = reading.devices
    assert device.uuid == "GPU-0" and device.name == H100 and device.mig_enabled is False
    assert device.memory_used_bytes == 30 * GIB  # version 2: reserved apart
    assert device.memory_reserved_bytes == GIB // 2
    assert device.memory_total_bytes == 80 * GIB
    assert device.utilization_ratio == pytest.approx(0.40)
    assert device.power_watts == pytest.approx(310.0)
    assert device.energy_joules == pytest.approx(9_000.0)
    assert device.processes == (
        readings.Process(10, readings.ProcessKind.COMPUTE, 20 * GIB, pytest.approx(0.35)),
    )


def test_mig_instances_are_read_with_their_profiles_and_processes() -> None:
    instances = [
        {
            "uuid": f"MIG-{i}",
            "profile": profile,
            "gpuInstanceId": gi,
            "computeInstanceId": 0,
            "memory": {"total": size * GIB, "used": (size // 2) * GIB},
            "processes": [{"pid": 100 + i, "usedGpuMemory": None}],
        }
        for i, (profile, gi, size) in enumerate([("3g.40gb", 1, 40), ("1g.10gb", 9, 10)])
    ]
    nvml = node(gpu("GPU-A", A100, mig={"instances": instances}))
    reading = reader.Reader(nvml).read()
    parent, *migs = reading.devices
    assert parent.mig_enabled is True and parent.processes is None  # they are the instances'
    assert [(m.uuid, m.mig_profile, m.gpu_instance_id, m.parent_uuid) for m in migs] == [
        ("MIG-0", "3g.40gb", 1, "GPU-A"),
        ("MIG-1", "1g.10gb", 9, "GPU-A"),
    ]
    assert migs[1].memory_total_bytes == 10 * GIB
    assert migs[0].processes == (readings.Process(100, readings.ProcessKind.COMPUTE, None),)
    assert migs[0].utilization_ratio is None and migs[0].power_watts is None
    # No utilisation or power per instance is not an error: the reader never asks.
    assert reading.errors == ()


def test_unsupported_fields_are_reported_per_field_and_the_rest_is_read() -> None:
    nvml = node(gpu("GPU-0", unsupported=["power", "energy", "processUtilization"]))
    reading = reader.Reader(nvml).read()
    (device,) = reading.devices
    assert device.power_watts is None and device.energy_joules is None
    assert device.memory_used_bytes == 30 * GIB
    assert {(e.device, e.field, e.code) for e in reading.errors} == {
        ("GPU-0", "power", pynvml.NVML_ERROR_NOT_SUPPORTED),
        ("GPU-0", "energy", pynvml.NVML_ERROR_NOT_SUPPORTED),
        ("GPU-0", "processUtilization", pynvml.NVML_ERROR_NOT_SUPPORTED),
    }
    assert all(e.message == "Not Supported" for e in reading.errors)


def test_a_gpu_that_fell_off_the_bus_does_not_stop_the_others() -> None:
    nvml = node(gpu("GPU-0"), gpu("GPU-1", lost=True), gpu("GPU-2"))
    reading = reader.Reader(nvml).read()
    assert [d.uuid for d in reading.devices] == ["GPU-0", "GPU-2"]
    (lost,) = reading.errors
    assert (lost.device, lost.field, lost.code) == (
        "index:1",
        "handle",
        pynvml.NVML_ERROR_GPU_IS_LOST,
    )
    assert lost.message == "GPU is lost"


def test_no_driver_is_a_reading_that_says_so_and_the_agent_retries() -> None:
    description: dict[str, Any] = {"init": "LibraryNotFound", "gpus": [gpu("GPU-0")]}
    nvml = fake_nvml.FakeNvml(description)
    adapter = reader.Reader(nvml)
    first = adapter.read()
    assert not first.ok and first.devices == ()
    assert first.driver_error == "nvmlInit: NVML Shared Library Not Found"
    description["init"] = "ok"  # the driver was installed meanwhile
    second = adapter.read()
    assert second.ok and [d.uuid for d in second.devices] == ["GPU-0"]
    assert nvml.calls.count("nvmlInit") == 2


def test_a_driver_that_went_away_is_initialised_again() -> None:
    nvml = node(gpu("GPU-0"))
    adapter = reader.Reader(nvml)
    assert adapter.read().ok
    nvml.nvmlShutdown()  # as if the driver was unloaded under the agent
    failed = adapter.read()
    assert not failed.ok and "Uninitialized" in (failed.driver_error or "")
    assert adapter.read().ok


def test_processes_of_every_list_count_once() -> None:
    processes = [
        {"pid": 1, "usedGpuMemory": GIB},
        {"pid": 2, "usedGpuMemory": 2 * GIB, "kind": "graphics"},
        {"pid": 3, "usedGpuMemory": 3 * GIB, "kind": "mps"},
    ]
    reading = reader.Reader(node(gpu("GPU-0", processes=processes))).read()
    (device,) = reading.devices
    assert [(p.pid, p.kind, p.used_memory_bytes) for p in device.processes or ()] == [
        (1, readings.ProcessKind.COMPUTE, GIB),
        (2, readings.ProcessKind.GRAPHICS, 2 * GIB),
        (3, readings.ProcessKind.COMPUTE, 3 * GIB),
    ]


def test_an_unreadable_process_list_is_unknown_not_empty() -> None:
    unsupported = ["computeProcesses", "graphicsProcesses", "mpsProcesses"]
    reading = reader.Reader(node(gpu("GPU-0", unsupported=unsupported))).read()
    assert reading.devices[0].processes is None


def test_process_utilisation_is_taken_once_per_sample() -> None:
    nvml = node(gpu("GPU-0", processes=[{"pid": 7, "usedGpuMemory": GIB, "smUtil": 50}]))
    adapter = reader.Reader(nvml)
    assert adapter.read().devices[0].processes[0].sm_utilization_ratio == pytest.approx(0.5)  # type: ignore[index]
    # No newer sample since: NVML answers NOT_FOUND, which is no error and no figure.
    again = adapter.read()
    assert again.errors == ()
    assert again.devices[0].processes[0].sm_utilization_ratio is None  # type: ignore[index]


def test_the_fake_answers_with_pynvml_error_classes() -> None:
    nvml = node(gpu("GPU-0", unsupported=["power"]))
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetPowerUsage(handle)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(5)


def test_the_fake_rereads_its_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nvml.yaml"
    path.write_text(yaml.safe_dump({"gpus": [gpu("GPU-0")]}), encoding="utf-8")
    nvml = fake_nvml.FakeNvml.from_file(path)
    adapter = reader.Reader(nvml)
    assert len(adapter.read().devices) == 1
    path.write_text(yaml.safe_dump({"gpus": [gpu("GPU-0"), gpu("GPU-1")]}), encoding="utf-8")
    os.utime(path, (1e9, 1e9))  # a different mtime, whatever the clock's resolution
    assert len(adapter.read().devices) == 2


# --- attribution ------------------------------------------------------------------------------

PODS = {
    UID_A: attribution.PodIdentity("team-a", "chat-7d9f8b6c5d-x2x4z", {CID_A: "vllm"}),
    UID_B: attribution.PodIdentity("team-b", "embed-5c4b3a2d1e-q9q8r", {CID_B: "server"}),
}
OWNERS: dict[int, cgroups.PodCgroup | None] = {
    10: cgroups.PodCgroup(UID_A, CID_A),
    11: cgroups.PodCgroup(UID_A, CID_A),
    20: cgroups.PodCgroup(UID_B, CID_B),
    30: None,
}


def device(*processes: tuple[int, int | None], used: int = 30 * GIB) -> readings.Device:
    return readings.Device(
        index=0,
        uuid="GPU-0",
        name=H100,
        memory_used_bytes=used,
        memory_total_bytes=80 * GIB,
        processes=tuple(
            readings.Process(pid, readings.ProcessKind.COMPUTE, memory) for pid, memory in processes
        ),
    )


def test_two_pods_on_one_time_sliced_gpu_each_get_their_own_memory() -> None:
    use = attribution.attribute(device((10, 12 * GIB), (11, 2 * GIB), (20, 8 * GIB)), OWNERS, PODS)
    assert [
        (c.namespace, c.container, c.memory_used_bytes, c.processes) for c in use.containers
    ] == [
        ("team-a", "vllm", 14 * GIB, 2),
        ("team-b", "server", 8 * GIB, 1),
    ]
    assert use.pods == 2 and use.host_processes == 0 and use.unresolved_processes == 0


def test_an_unreported_process_charges_its_container_the_whole_device() -> None:
    use = attribution.attribute(device((10, None), (20, 8 * GIB), used=33 * GIB), OWNERS, PODS)
    chat, embed = use.containers
    assert chat.memory_used_bytes == 33 * GIB and chat.charged_whole_device
    assert embed.memory_used_bytes == 8 * GIB and not embed.charged_whole_device


def test_host_processes_and_unknown_pods_are_counted_apart() -> None:
    owners = {**OWNERS, 40: cgroups.PodCgroup("00000000-0000-4000-8000-000000000000", None)}
    reading = readings.NodeReading(devices=(device((30, GIB), (40, GIB), (50, GIB)),))
    (use,) = attribution.attribute_all(reading, owners, PODS)
    assert use.containers == ()
    assert use.host_processes == 1 and use.host_memory_used_bytes == GIB
    assert use.unresolved_processes == 2  # pid 40's pod is not listed, pid 50's cgroup unread
    assert attribution.unknown_pods(reading, owners, PODS) == {
        "00000000-0000-4000-8000-000000000000"
    }


def test_a_container_not_yet_in_the_pod_status_is_still_its_pods() -> None:
    owners = {10: cgroups.PodCgroup(UID_A, "c" * 64)}
    (use,) = attribution.attribute_all(
        readings.NodeReading(devices=(device((10, GIB)),)), owners, PODS
    )
    assert [(c.pod, c.container) for c in use.containers] == [("chat-7d9f8b6c5d-x2x4z", "")]


# --- exposition -------------------------------------------------------------------------------


def _parsed(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_the_exposition_uses_dcgm_names_units_and_labels() -> None:
    reading = readings.NodeReading(
        devices=(device((10, 12 * GIB), (20, 8 * GIB)),),
        errors=(readings.FieldError("GPU-0", "power", 3, "Not Supported"),),
    )
    uses = attribution.attribute_all(reading, OWNERS, PODS)
    text = exposition.render(exposition.families(reading, uses, "gpu-node-1"))
    series = _parsed(text)
    fb = series["DCGM_FI_DEV_FB_USED"]
    assert len(fb) == 2  # one per pod using the GPU, as dcgm-exporter does
    labels, value = fb[0]
    assert value == 30 * 1024  # MiB
    assert labels == {
        "gpu": "0",
        "UUID": "GPU-0",
        "device": "nvidia0",
        "modelName": H100,
        "Hostname": "gpu-node-1",
        "namespace": "team-a",
        "pod": "chat-7d9f8b6c5d-x2x4z",
        "container": "vllm",
    }
    memory = {
        labels["pod"]: value for labels, value in series["gpu_rightsizer_process_memory_used_bytes"]
    }
    assert memory == {"chat-7d9f8b6c5d-x2x4z": 12 * GIB, "embed-5c4b3a2d1e-q9q8r": 8 * GIB}
    assert series["gpu_rightsizer_gpu_pods"] == [
        ({**{k: v for k, v in labels.items() if k not in ("namespace", "pod", "container")}}, 2.0)
    ]
    assert series["gpu_rightsizer_agent_field_errors"] == [
        ({"Hostname": "gpu-node-1", "field": "power", "code": "3"}, 1.0)
    ]
    assert series["gpu_rightsizer_agent_nvml_up"] == [({"Hostname": "gpu-node-1"}, 1.0)]
    assert "DCGM_FI_DEV_POWER_USAGE" not in series  # unknown is absent, never 0


def test_mig_instances_carry_dcgm_instance_labels_and_their_parent_the_power() -> None:
    instances = [
        {
            "uuid": "MIG-0",
            "profile": "1g.10gb",
            "gpuInstanceId": 9,
            "memory": {"total": 10 * GIB, "used": 4 * GIB},
            "processes": [{"pid": 10, "usedGpuMemory": 3 * GIB}],
        }
    ]
    reading = reader.Reader(node(gpu("GPU-A", A100, mig={"instances": instances}))).read()
    uses = attribution.attribute_all(reading, OWNERS, PODS)
    series = _parsed(exposition.render(exposition.families(reading, uses, "n")))
    (mig_used,) = [s for s in series["DCGM_FI_DEV_FB_USED"] if "GPU_I_ID" in s[0]]
    assert mig_used[0]["GPU_I_PROFILE"] == "1g.10gb" and mig_used[0]["GPU_I_ID"] == "9"
    assert mig_used[0]["UUID"] == "GPU-A" and mig_used[0]["modelName"] == A100
    assert mig_used[0]["pod"] == "chat-7d9f8b6c5d-x2x4z" and mig_used[1] == 4 * 1024
    (power,) = series["DCGM_FI_DEV_POWER_USAGE"]
    assert "pod" not in power[0] and power[1] == 310.0
    assert series["gpu_rightsizer_gpu_mig_mode"][0][1] == 1.0


def test_no_driver_exposes_nvml_down_and_nothing_else_about_gpus() -> None:
    reading = readings.NodeReading(driver_error="nvmlInit: Driver Not Loaded")
    series = _parsed(exposition.render(exposition.families(reading, (), "n")))
    assert series == {"gpu_rightsizer_agent_nvml_up": [({"Hostname": "n"}, 0.0)]}


def test_label_values_are_escaped() -> None:
    family = exposition.Family("x", "gauge", "h", (exposition.Sample((("a", 'q"\\\n'),), 1.5),))
    ((labels, value),) = _parsed(exposition.render([family]))["x"]
    assert labels == {"a": 'q"\\\n'} and value == 1.5


# --- the pod list -----------------------------------------------------------------------------


def test_the_pod_list_maps_uids_and_every_kind_of_container_id() -> None:
    items = [
        {
            "metadata": {"uid": UID_A, "namespace": "team-a", "name": "chat-0"},
            "status": {
                "initContainerStatuses": [
                    {"name": "fetch", "containerID": f"containerd://{CID_B}"}
                ],
                "containerStatuses": [{"name": "vllm", "containerID": f"containerd://{CID_A}"}],
            },
        },
        {"metadata": {"uid": UID_B, "namespace": "team-b", "name": "pending"}, "status": {}},
        {"metadata": {"name": "no-uid"}},
    ]
    found = pod_directory.identities(items)
    assert found == {
        UID_A: attribution.PodIdentity("team-a", "chat-0", {CID_B: "fetch", CID_A: "vllm"}),
        UID_B: attribution.PodIdentity("team-b", "pending", {}),
    }


# --- the loop and the endpoint ----------------------------------------------------------------


@dataclasses.dataclass
class FakePods:
    listed: dict[str, attribution.PodIdentity]
    lists: int = 0
    error: str | None = None
    visible: dict[str, attribution.PodIdentity] = dataclasses.field(default_factory=dict)

    @property
    def pods(self) -> Mapping[str, attribution.PodIdentity]:
        return self.visible

    def refresh_if_needed(self, now: float, unknown: Collection[str]) -> None:
        if unknown or not self.lists:
            self.lists += 1
            self.visible = dict(self.listed)


def proc_tree(root: pathlib.Path, owners: Mapping[int, str]) -> pathlib.Path:
    for pid, text in owners.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text, encoding="utf-8")
    return root


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_pass_reads_attributes_and_publishes(tmp_path: pathlib.Path) -> None:
    proc = proc_tree(
        tmp_path / "proc",
        {
            10: f"0::/kubepods/burstable/pod{UID_A}/{CID_A}\n",
            20: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
            f"{UID_B.replace('-', '_')}.slice/cri-containerd-{CID_B}.scope\n",
        },
    )
    processes = [{"pid": 10, "usedGpuMemory": 12 * GIB}, {"pid": 20, "usedGpuMemory": 6 * GIB}]
    pods = FakePods(PODS)
    clock = Clock()
    agent = running.Agent(
        reader.Reader(node(gpu("GPU-0", processes=processes))),
        pods,
        node="gpu-node-1",
        proc_root=proc,
        interval_seconds=10,
        monotonic=clock,
        wall=lambda: 1.7e9,
    )
    assert agent.health().healthy  # starting
    agent.step()
    series = _parsed(agent.metrics())
    memory = {
        (labels["namespace"], labels["container"]): value
        for labels, value in series["gpu_rightsizer_process_memory_used_bytes"]
    }
    assert memory == {("team-a", "vllm"): 12 * GIB, ("team-b", "server"): 6 * GIB}
    assert series["gpu_rightsizer_agent_readings_total"][0][1] == 1.0
    assert series["gpu_rightsizer_agent_last_reading_timestamp_seconds"][0][1] == 1.7e9
    health = agent.health()
    assert health.healthy and health.detail["nvml"] == "ok" and health.detail["devices"] == 1
    clock.now += 31  # three intervals (at least 30 s) without a pass
    stuck = agent.health()
    assert not stuck.healthy and stuck.detail["reason"] == "the reading loop is stuck"


def test_the_endpoint_serves_metrics_and_health(tmp_path: pathlib.Path) -> None:
    agent = running.Agent(
        reader.Reader(fake_nvml.FakeNvml({"init": "DriverNotLoaded"})),
        FakePods({}),
        node="n",
        proc_root=tmp_path,
        interval_seconds=10,
    )
    agent.step()
    server = serving.start("127.0.0.1", 0, agent.metrics, agent.health)
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        assert 'gpu_rightsizer_agent_nvml_up{Hostname="n"} 0' in text
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            body = json.loads(response.read())
        # No driver is reported, not a reason to restart the agent.
        assert body["healthy"] is True and body["nvml"] == "nvmlInit: Driver Not Loaded"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.shutdown()


def test_a_failing_pass_is_counted_and_the_loop_goes_on(tmp_path: pathlib.Path) -> None:
    class Broken(reader.Reader):
        calls = 0

        def read(self) -> readings.NodeReading:
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("boom")
            return readings.NodeReading()

    stop = threading.Event()
    agent = running.Agent(
        Broken(fake_nvml.FakeNvml({})), None, node="n", proc_root=tmp_path, interval_seconds=0.01
    )
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if "gpu_rightsizer_agent_reading_failures_total" in agent.metrics():
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    series = _parsed(agent.metrics())
    assert series["gpu_rightsizer_agent_reading_failures_total"][0][1] >= 1.0
    assert not thread.is_alive()


# --- the command ------------------------------------------------------------------------------


def test_the_command_refuses_a_bad_interval_and_a_missing_configuration(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from gpu_rightsizer.cli import main  # noqa: PLC0415

    runner = CliRunner()
    bad = runner.invoke(main.cli, ["agent", "--node-name", "n", "--interval", "0s"])
    assert bad.exit_code == 2 and "--interval" in bad.output and "must be positive" in bad.output
    missing = runner.invoke(main.cli, ["agent"], env={"NODE_NAME": ""})
    assert missing.exit_code == 2 and "--node-name" in missing.output
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    empty = tmp_path / "kubeconfig"
    empty.write_text("", encoding="utf-8")
    nvml_file = tmp_path / "nvml.yaml"
    nvml_file.write_text("gpus: []\n", encoding="utf-8")
    args = ["agent", "--node-name", "n", "--kubeconfig", str(empty), "--fake-nvml", str(nvml_file)]
    unconfigured = runner.invoke(main.cli, args)
    assert unconfigured.exit_code == 1
    assert "no Kubernetes configuration for the pod list" in unconfigured.output
    assert "--no-pod-list" in unconfigured.output
