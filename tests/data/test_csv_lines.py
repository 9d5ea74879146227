"""CSV errors name the line an editor shows: blank lines and a quoted field's line breaks
count (they were skipped, so every line after a blank one was off)."""

from __future__ import annotations

import pytest

from purestep.data.datasets import csv
from purestep.data.text import text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,y\n1,2\n\n2,3\n\n\n3,x\n4,5\n", "column 'y' line 7: 'x' is not a number"),
        ("a,y\n1,2\n\n2,\n4,5\n", "column 'y' line 4: the target is empty"),
        ("a,b,y\n1,2,3\n\n1,z,3\n", "column 'b' line 4: 'z' is not a number"),
        ('a,y\n"1\n",2\n\n1,2,3\n', "line 5 has 3 fields, the header has 2"),
    ],
)
def test_csv_loader_names_the_file_line(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        csv(path=str(path), target="y")


def test_text_loader_names_the_file_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\nhi,a\n\n"two\nlines",b\n\n,c\n')
    with pytest.raises(ValueError, match="line 7 has an empty text or label"):
        text(path=str(path))
    path.write_text("text,label,split\nhi,a,train\n\nho,b,tset\n")
    with pytest.raises(ValueError, match="line 4: split must be one of"):
        text(path=str(path))
