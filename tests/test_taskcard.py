"""Task cards: schema, YAML round trip, and errors that name the file, the field and the problem."""

import pytest
import yaml

from builder.core.taskcard import (
    Metric,
    OutputKind,
    TaskCardError,
    load_task_card,
    parse_task_card,
    save_task_card,
)

GOOD = {
    "name": "count-red",
    "description": "Count the red objects on the tray.",
    "output": "count",
    "examples": [
        {"image": "a.png", "query": "How many red objects?", "expected": 3},
        {"image": "b.png", "query": "How many red objects?", "expected": 0},
    ],
}


def write(tmp_path, data, name="task.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_good_card_round_trips(tmp_path):
    card = load_task_card(write(tmp_path, GOOD))
    assert card.output is OutputKind.count
    assert card.metric is Metric.exact_match  # default for counts
    out = save_task_card(card, tmp_path / "copy.yaml")
    again = load_task_card(out)
    assert again == card


@pytest.mark.parametrize(
    ("patch", "field", "problem"),
    [
        ({"name": "Bad Name!"}, "name", "lower-case"),
        ({"output": "polygon"}, "output", "'text'"),
        ({"description": None}, "description", "string"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"metric": "f1"}, "metric", "exact_match"),
    ],
)
def test_errors_name_field(tmp_path, patch, field, problem):
    path = write(tmp_path, {**GOOD, **patch})
    with pytest.raises(TaskCardError) as e:
        load_task_card(path)
    msg = str(e.value)
    assert str(path) in msg and field in msg and problem in msg


def test_missing_field_named(tmp_path):
    data = dict(GOOD)
    del data["output"]
    with pytest.raises(TaskCardError, match=r"output: required field is missing"):
        load_task_card(write(tmp_path, data))


@pytest.mark.parametrize(
    ("output", "expected", "problem"),
    [
        ("count", -1, "non-negative integer"),
        ("count", "three", "non-negative integer"),
        ("bool", "maybe", "yes/no"),
        ("boxes", [[10, 10, 5, 20]], "x1 <= x0"),
        ("boxes", [[1, 2, 3]], "box 0"),
        ("text", ["a"], "short text"),
    ],
)
def test_expected_checked_against_kind(output, expected, problem):
    data = {**GOOD, "output": output, "examples": [{"image": "a.png", "query": "q", "expected": expected}]}
    with pytest.raises(TaskCardError, match=r"examples\[0\]\.expected: .*" + problem):
        parse_task_card(data, "card.yaml")


def test_choice_index_in_range():
    ex = {"image": "a.png", "query": "which caption?", "choices": ["x", "y"], "expected": 2}
    with pytest.raises(TaskCardError, match=r"examples\[0\]\.expected: choice index 2 is outside 0..1"):
        parse_task_card({**GOOD, "output": "choice", "examples": [ex]})
    multi = {"image": ["a.png", "b.png", "c.png"], "query": "a red circle", "expected": 2}
    card = parse_task_card({**GOOD, "output": "choice", "examples": [multi]})
    assert card.metric is Metric.choice_accuracy and card.examples[0].images == ["a.png", "b.png", "c.png"]


def test_bool_accepts_yes_no():
    card = parse_task_card({**GOOD, "output": "bool", "examples": [{"image": "a.png", "expected": "Yes"}]})
    assert card.examples[0].expected is True


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "name: x\ndescription: [unclosed\noutput: text\n")
    with pytest.raises(TaskCardError, match=r"not valid YAML at line \d+"):
        load_task_card(path)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(TaskCardError, match="must be a mapping"):
        load_task_card(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(TaskCardError, match="file not found"):
        load_task_card(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(TaskCardError, match="not UTF-8"):
        load_task_card(tmp_path / "bin.yaml")


def test_check_images_reports_missing(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    path = write(tmp_path, GOOD)
    with pytest.raises(TaskCardError, match=r"examples\[1\]\.image: b.png does not exist"):
        load_task_card(path, check_images=True)
