"""What every benchmark JSON records about the machine."""

import json

from course_utils.environment import machine_info, record_benchmark


def test_record_benchmark_writes_name_date_machine_then_the_fields(tmp_path):
    path = tmp_path / "x.json"
    written = record_benchmark(path, "demo", rows=[1, 2], seconds=0.5)
    on_disk = json.loads(path.read_text())
    assert on_disk == written
    assert list(on_disk)[:3] == ["benchmark", "date", "machine"] and on_disk["benchmark"] == "demo"
    assert on_disk["rows"] == [1, 2] and on_disk["machine"]["versions"] == machine_info()["versions"]


def test_the_machine_record_names_the_cpu_and_the_vector_instructions_torch_uses():
    import platform
    from pathlib import Path

    import torch

    info = machine_info()
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    assert info["processor"] == (names[0] if names else platform.processor() or platform.machine())
    assert info["cpu_vector_isa"] == torch.backends.cpu.get_cpu_capability()
