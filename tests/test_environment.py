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
