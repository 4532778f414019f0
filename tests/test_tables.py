"""The CSV reader every data loader shares, and the plain-text table."""

import pytest

from course_utils.tables import format_table, read_csv_rows


def test_rows_come_with_the_line_an_editor_shows(tmp_path):
    path = tmp_path / "gpus.csv"
    path.write_text("gpu,memory_gb\nA,80\n\"B, the second\",141\n", encoding="utf-8")
    assert read_csv_rows(path, "GPU") == [("gpus.csv line 2", {"gpu": "A", "memory_gb": "80"}),
                                          ("gpus.csv line 3", {"gpu": "B, the second", "memory_gb": "141"})]


def test_a_file_with_only_a_header_is_refused_by_name(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("model,price\n", encoding="utf-8")
    with pytest.raises(ValueError, match="prices.csv: no price rows"):
        read_csv_rows(path, "price")


def test_the_text_table_aligns_numbers_right_and_words_left():
    text = format_table([{"name": "a", "n": 1500}, {"name": "bbb", "n": 2}])
    assert text.splitlines() == ["name      n", "----  -----", "a     1,500", "bbb       2"]
